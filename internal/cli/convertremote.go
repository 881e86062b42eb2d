package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/streaming"
)

// Media types of Docker images, which convert reads like OCI ones.
const (
	dockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	dockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	dockerLayerTar     = "application/vnd.docker.image.rootfs.diff.tar"
	dockerConfig       = "application/vnd.docker.container.image.v1+json"
)

// maxConfigSize bounds the image configs convert reads.
const maxConfigSize = 8 << 20

// remoteConversion is the client-side conversion of one registry image.
type remoteConversion struct {
	a      *App
	cl     *client.Client
	repo   string
	opts   streaming.Options
	schema client.ReferrersSchema
	signer *streamingSigner // nil: artifacts are not signed
	// converted layers by source digest: an index's platforms may share.
	layers map[digest.Digest]ocispec.Descriptor
	done   atomic.Int64
	total  int64
	bar    func(int64)
}

// imageToConvert is an image manifest of the subject, ready to convert.
type imageToConvert struct {
	manifest ocispec.Manifest
	config   ocispec.Image
	platform ocispec.Platform
}

// convertRemote converts a registry image here and pushes its streaming
// artifact back as a referrer, signed when signer is not nil.
func (a *App) convertRemote(ctx context.Context, ref string, opts streaming.Options, force bool, signer *streamingSigner) error {
	c, err := a.config()
	if err != nil {
		return err
	}
	regPart, rest := c.splitRegistry(ref)
	var reg *Registry
	if regPart != "" {
		if a.flags.registry != "" {
			return usageErrorf("%q names its registry; drop --registry", ref)
		}
		reg, err = a.resolveRegistry(regPart)
	} else {
		reg, err = a.registry()
	}
	if err != nil {
		return err
	}
	img, err := parseImage(rest)
	if err != nil {
		return err
	}
	cl := a.Client(ctx, reg)
	ctx = cl.ForStreamingPush(ctx, img.Repository)
	root, err := cl.Resolve(ctx, img.Repository, img.Reference())
	if err != nil {
		return err
	}
	rc := &remoteConversion{a: a, cl: cl, repo: img.Repository, opts: opts, signer: signer, layers: map[digest.Digest]ocispec.Descriptor{}}
	if !force {
		refs, err := cl.Referrers(ctx, img.Repository, root.Digest, "")
		if err != nil {
			return err
		}
		if existing := rc.alreadyConverted(refs, root.Digest); len(existing) > 0 {
			a.hint("%s already has a streaming artifact; not converted again (--force converts it anyway).", img)
			return a.print(existingConversions(img.Repository, root.Digest, existing, signer), convertTable)
		}
	}
	if rc.schema, err = cl.ReferrersSupport(ctx, img.Repository, root.Digest); err != nil {
		return err
	}
	payload, mediaType, err := cl.GetManifest(ctx, img.Repository, root.Digest.String())
	if err != nil {
		return err
	}
	subject := ocispec.Descriptor{MediaType: manifestMediaType(payload, mediaType), Digest: root.Digest, Size: int64(len(payload))}
	images, err := rc.images(ctx, subject, payload)
	if err != nil {
		return fmt.Errorf("%s: %w", img, err)
	}
	for _, im := range images {
		for _, l := range im.manifest.Layers {
			rc.total += l.Size
		}
	}
	rc.bar = a.byteProgress("Converting", rc.total)
	out := []convertedImage{}
	for _, im := range images {
		c, err := rc.convertImage(ctx, im, subject)
		if rc.bar != nil {
			rc.bar(-1)
		}
		if err != nil {
			return fmt.Errorf("%s (%s): %w", img, platformString(im.platform.OS, im.platform.Architecture, im.platform.Variant), err)
		}
		c.Platform = platformString(im.platform.OS, im.platform.Architecture, im.platform.Variant)
		c.Subject, c.Repository, c.ReferrersSchema = root.Digest.String(), img.Repository, string(rc.schema)
		out = append(out, c)
	}
	return a.print(out, convertTable)
}

// alreadyConverted returns the streaming artifacts among the referrers of subject that
// make converting it again pointless: every one, or with a signer, those
// its key signed. With a signer and unsigned artifacts only, converting
// again signs the same artifact.
func (rc *remoteConversion) alreadyConverted(refs []ocispec.Descriptor, subject digest.Digest) []ocispec.Descriptor {
	var signed map[digest.Digest]bool
	if rc.signer != nil {
		signed = rc.signer.signedBy(refs, subject)
	}
	var out []ocispec.Descriptor
	for _, d := range refs {
		if d.ArtifactType == streaming.ArtifactType && (signed == nil || signed[d.Digest]) {
			out = append(out, d)
		}
	}
	return out
}

func existingConversions(repo string, subject digest.Digest, refs []ocispec.Descriptor, signer *streamingSigner) []convertedImage {
	out := make([]convertedImage, 0, len(refs))
	for _, r := range refs {
		c := convertedImage{Platform: platformString(r.Annotations[streaming.AnnotationPlatformOS], r.Annotations[streaming.AnnotationPlatformArch],
			r.Annotations[streaming.AnnotationPlatformVariant]), Subject: subject.String(), Manifest: r, Repository: repo, Existing: true}
		if signer != nil {
			c.SignedBy = signer.kid
		}
		out = append(out, c)
	}
	return out
}

// manifestMediaType is a manifest's own mediaType field, else the one the
// registry gave.
func manifestMediaType(payload []byte, fallback string) string {
	var m struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(payload, &m) == nil && m.MediaType != "" {
		return m.MediaType
	}
	return fallback
}

// images lists the images to convert: the manifest itself, or every Linux
// image of an index.
func (rc *remoteConversion) images(ctx context.Context, subject ocispec.Descriptor, payload []byte) ([]*imageToConvert, error) {
	switch subject.MediaType {
	case ocispec.MediaTypeImageManifest, dockerManifest:
		im, err := rc.image(ctx, payload, nil)
		if err != nil {
			return nil, err
		}
		return []*imageToConvert{im}, nil
	case ocispec.MediaTypeImageIndex, dockerManifestList:
	default:
		return nil, fmt.Errorf("%s is not an image (%s)", subject.Digest, subject.MediaType)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(payload, &idx); err != nil {
		return nil, fmt.Errorf("index %s: %w", subject.Digest, err)
	}
	var out []*imageToConvert
	for _, child := range idx.Manifests {
		if child.Platform != nil && !streaming.SupportedPlatform(*child.Platform) || (child.MediaType != ocispec.MediaTypeImageManifest && child.MediaType != dockerManifest) {
			continue
		}
		b, _, err := rc.cl.GetManifest(ctx, rc.repo, child.Digest.String())
		if err != nil {
			return nil, err
		}
		im, err := rc.image(ctx, b, child.Platform)
		if errors.As(err, new(*streaming.PlatformError)) {
			continue // its config names another platform: skipped, as the registry skips it
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", child.Digest, err)
		}
		out = append(out, im)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the index %s has no Linux image", subject.Digest)
	}
	return out, nil
}

// image reads an image manifest and its config and checks it can stream.
func (rc *remoteConversion) image(ctx context.Context, payload []byte, platform *ocispec.Platform) (*imageToConvert, error) {
	im := &imageToConvert{}
	if err := json.Unmarshal(payload, &im.manifest); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	m := &im.manifest
	if m.ArtifactType == streaming.ArtifactType {
		return nil, fmt.Errorf("a streaming artifact cannot be converted again")
	}
	if m.Config.MediaType != ocispec.MediaTypeImageConfig && m.Config.MediaType != dockerConfig {
		return nil, fmt.Errorf("not a runnable image: its config is %q", m.Config.MediaType)
	}
	if m.Config.Size > maxConfigSize {
		return nil, fmt.Errorf("the image config is %d bytes, more than %d", m.Config.Size, maxConfigSize)
	}
	r, err := rc.cl.FetchBlob(ctx, rc.repo, m.Config)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(r, maxConfigSize))
	r.Close()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if digest.FromBytes(b) != m.Config.Digest {
		return nil, fmt.Errorf("the config blob does not match its digest %s", m.Config.Digest)
	}
	if err := json.Unmarshal(b, &im.config); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	im.platform = im.config.Platform
	if platform != nil {
		im.platform = *platform
	}
	if err := streaming.CheckPlatform(im.platform); err != nil {
		return nil, withPlatformCode(err)
	}
	switch {
	case len(m.Layers) == 0:
		return nil, fmt.Errorf("not a runnable image: it has no layers")
	case len(im.config.RootFS.DiffIDs) != len(m.Layers):
		return nil, fmt.Errorf("the config lists %d layer diff IDs for %d layers", len(im.config.RootFS.DiffIDs), len(m.Layers))
	}
	for _, l := range m.Layers {
		switch l.MediaType {
		case ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd, dockerLayerGzip, dockerLayerTar:
		default:
			return nil, fmt.Errorf("layer %s is %s, which cannot be streamed", l.Digest, l.MediaType)
		}
	}
	return im, nil
}

// convertImage converts an image's layers, pushes them, the signature (with
// a signer) and the streaming manifest, and says what it pushed.
func (rc *remoteConversion) convertImage(ctx context.Context, im *imageToConvert, subject ocispec.Descriptor) (convertedImage, error) {
	layers := make([]ocispec.Descriptor, len(im.manifest.Layers))
	for i, l := range im.manifest.Layers {
		d, err := rc.convertLayer(ctx, l, im.config.RootFS.DiffIDs[i])
		if err != nil {
			return convertedImage{}, fmt.Errorf("layer %d (%s): %w", i, l.Digest, err)
		}
		layers[i] = d
	}
	m := streaming.Manifest(im.manifest.Config, layers, subject, im.platform)
	payload, err := json.Marshal(m)
	if err != nil {
		return convertedImage{}, err
	}
	out := convertedImage{Layers: len(layers)}
	if rc.signer != nil {
		// The signature goes first: a node never sees the artifact
		// without it.
		sig, err := rc.signer.push(ctx, rc.cl, rc.repo, subject, digest.FromBytes(payload), rc.schema)
		if err != nil {
			return convertedImage{}, fmt.Errorf("push the signature: %w", err)
		}
		out.SignedBy, out.Signature = rc.signer.kid, sig.Digest.String()
	}
	d, err := rc.cl.PushManifest(ctx, rc.repo, ocispec.MediaTypeImageManifest, payload, rc.schema)
	if err != nil {
		return convertedImage{}, err
	}
	d.ArtifactType, d.Annotations = streaming.ArtifactType, m.Annotations
	out.Manifest = d
	return out, nil
}

// convertLayer fetches a layer, converts it into a temporary file, checks
// it against its digest and DiffID, and pushes the result.
func (rc *remoteConversion) convertLayer(ctx context.Context, src ocispec.Descriptor, diffID digest.Digest) (ocispec.Descriptor, error) {
	if d, ok := rc.layers[src.Digest]; ok {
		rc.advance(src.Size)
		return d, nil
	}
	in, err := rc.cl.FetchBlob(ctx, rc.repo, src)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer in.Close()
	tmp, err := os.CreateTemp("", "sluice-convert-*")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	opts := rc.opts
	base := rc.done.Load()
	opts.Progress = func(n int64) {
		if rc.bar != nil {
			rc.bar(base + n)
		}
	}
	res, err := streaming.Convert(ctx, in, tmp, opts)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	rc.done.Store(base)
	rc.advance(src.Size)
	switch {
	case res.SourceDigest != src.Digest:
		return ocispec.Descriptor{}, fmt.Errorf("the layer read hashes to %s, not %s", res.SourceDigest, src.Digest)
	case res.DiffID != diffID:
		return ocispec.Descriptor{}, fmt.Errorf("the layer uncompresses to %s but the image config says %s", res.DiffID, diffID)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return ocispec.Descriptor{}, err
	}
	d := res.Descriptor()
	if err := rc.cl.PushBlob(ctx, rc.repo, d, tmp); err != nil {
		return ocispec.Descriptor{}, err
	}
	rc.layers[src.Digest] = d
	return d, nil
}

func (rc *remoteConversion) advance(n int64) {
	v := rc.done.Add(n)
	if rc.bar != nil {
		rc.bar(v)
	}
}
