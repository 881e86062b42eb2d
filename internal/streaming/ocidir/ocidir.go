// Package ocidir converts images stored in an OCI image layout directory
// into their seekable-zstd streaming form, written back into the same
// layout: converted layers as blobs, and one streaming manifest per
// platform (the original config, subject = the original manifest, or for
// an image index the index, as the registry's conversions do) added to
// index.json, where OCI-layout-aware tools (oras, skopeo) find it.
package ocidir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/streaming"
)

// Docker media types a layout may hold (docker save, skopeo copy).
const (
	dockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	dockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// Errors callers may branch on.
var (
	ErrNotFound         = errors.New("not found in the OCI layout")
	ErrAlreadyStreaming = errors.New("a streaming artifact cannot be converted again")
	ErrUnsupported      = errors.New("unsupported image")
)

// Converted is the streaming manifest made for one image manifest.
type Converted struct {
	Platform ocispec.Platform
	// Subject is the original image manifest (the index, for an image of an
	// index); Manifest the streaming one.
	Subject  ocispec.Descriptor
	Manifest ocispec.Descriptor
	Layers   []*streaming.Result
}

// layout is an OCI image layout directory.
type layout struct{ Dir string }

// Convert converts the image tagged tag (or the layout's only image when
// tag is empty) and records the streaming manifests in index.json. An
// image that is not a Linux image is refused with a
// *streaming.PlatformError; for an image index, every Linux platform is
// converted.
func Convert(ctx context.Context, dir, tag string, opts streaming.Options) ([]Converted, error) {
	l := layout{Dir: dir}
	idx, err := l.index()
	if err != nil {
		return nil, err
	}
	root, err := selectImage(idx, tag, dir)
	if err != nil {
		return nil, err
	}
	targets := []ocispec.Descriptor{root}
	isIndex := root.MediaType == ocispec.MediaTypeImageIndex || root.MediaType == dockerManifestList
	if isIndex {
		var sub ocispec.Index
		if err := l.readJSON(root, &sub); err != nil {
			return nil, err
		}
		targets = targets[:0]
		for _, m := range sub.Manifests {
			if m.Platform == nil || streaming.SupportedPlatform(*m.Platform) {
				targets = append(targets, m)
			}
		}
	}
	var out []Converted
	subject := ocispec.Descriptor{MediaType: root.MediaType, Digest: root.Digest, Size: root.Size}
	for _, m := range targets {
		c, err := l.convertManifest(ctx, m, subject, opts)
		if isIndex && errors.As(err, new(*streaming.PlatformError)) {
			// An index's image whose config names another platform is
			// skipped, as the registry's conversions skip it.
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", m.Digest, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: the index %s has no Linux platform", ErrUnsupported, root.Digest)
	}
	return out, l.addToIndex(out)
}

func selectImage(idx *ocispec.Index, tag, dir string) (ocispec.Descriptor, error) {
	var found []ocispec.Descriptor
	for _, m := range idx.Manifests {
		if m.ArtifactType == streaming.ArtifactType {
			continue
		}
		if tag == "" || m.Annotations[ocispec.AnnotationRefName] == tag {
			found = append(found, m)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) == 0 && tag != "":
		return ocispec.Descriptor{}, fmt.Errorf("%w: no image tagged %q in %s", ErrNotFound, tag, dir)
	case len(found) == 0:
		return ocispec.Descriptor{}, fmt.Errorf("%w: no image in %s", ErrNotFound, dir)
	}
	return ocispec.Descriptor{}, fmt.Errorf("%d images in %s: name one with oci:%s:TAG", len(found), dir, dir)
}

// convertManifest converts every layer of one image manifest and writes its
// streaming manifest.
func (l layout) convertManifest(ctx context.Context, desc, subject ocispec.Descriptor, opts streaming.Options) (Converted, error) {
	c := Converted{Subject: subject}
	var m ocispec.Manifest
	if err := l.readJSON(desc, &m); err != nil {
		return c, err
	}
	if m.ArtifactType == streaming.ArtifactType || m.Config.MediaType == streaming.ArtifactType {
		return c, ErrAlreadyStreaming
	}
	var cfg ocispec.Image
	if err := l.readJSON(m.Config, &cfg); err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	c.Platform = cfg.Platform
	if desc.Platform != nil {
		c.Platform = *desc.Platform
	}
	if err := streaming.CheckPlatform(c.Platform); err != nil {
		return c, err
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return c, fmt.Errorf("%w: %d layers but %d DiffIDs in the config", ErrUnsupported, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	layers := make([]ocispec.Descriptor, len(m.Layers))
	for i, ld := range m.Layers {
		res, err := l.convertLayer(ctx, ld, cfg.RootFS.DiffIDs[i], opts)
		if err != nil {
			return c, fmt.Errorf("layer %d (%s): %w", i, ld.Digest, err)
		}
		c.Layers = append(c.Layers, res)
		layers[i] = res.Descriptor()
	}
	sm := streaming.Manifest(m.Config, layers, subject, c.Platform)
	payload, err := json.Marshal(sm)
	if err != nil {
		return c, err
	}
	c.Manifest = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(payload),
		Size: int64(len(payload)), ArtifactType: streaming.ArtifactType, Annotations: sm.Annotations}
	return c, l.writeBlob(c.Manifest.Digest, func(w io.Writer) error { _, err := w.Write(payload); return err })
}

func (l layout) convertLayer(ctx context.Context, ld ocispec.Descriptor, diffID digest.Digest, opts streaming.Options) (*streaming.Result, error) {
	switch ld.MediaType {
	case ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd, dockerLayerGzip:
	default:
		return nil, fmt.Errorf("%w: layer media type %q", ErrUnsupported, ld.MediaType)
	}
	in, err := os.Open(l.blobPath(ld.Digest))
	if err != nil {
		return nil, fmt.Errorf("%w: layer blob: %v", ErrNotFound, err)
	}
	defer in.Close()
	var res *streaming.Result
	tmp, err := os.CreateTemp(filepath.Join(l.Dir, "blobs"), ".converting-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if res, err = streaming.Convert(ctx, in, tmp, opts); err != nil {
		return nil, err
	}
	switch {
	case res.SourceDigest != ld.Digest:
		return nil, fmt.Errorf("layer blob hashes to %s, not %s: the layout is corrupt", res.SourceDigest, ld.Digest)
	case res.DiffID != diffID:
		return nil, fmt.Errorf("layer uncompresses to %s but the config says %s", res.DiffID, diffID)
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	return res, l.place(tmp.Name(), res.Digest)
}
