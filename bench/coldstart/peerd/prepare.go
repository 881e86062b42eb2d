package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/awslabs/soci-snapshotter/soci"
	socistore "github.com/awslabs/soci-snapshotter/soci/store"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/images/converter"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/containerd/stargz-snapshotter/analyzer"
	"github.com/containerd/stargz-snapshotter/estargz"
	estargzconvert "github.com/containerd/stargz-snapshotter/nativeconverter/estargz"
	"github.com/containerd/stargz-snapshotter/recorder"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// prepare makes a peer's form of an image in the registry, as its users
// do: eStargz with stargz-snapshotter's converter (optimized: after its
// analyzer ran the workload's command and recorded the files it read), or
// a SOCI index manifest v2 with soci-snapshotter's builder (with a
// prefetch list: the files the same analyzer recorded).
//
//	peerd prepare --containerd SOCK --src REF --dst REF --kind estargz|estargz-opt|soci|soci-prefetch [--args 'python3 -c ...']
func prepare(args []string) error {
	fl := flag.NewFlagSet("prepare", flag.ExitOnError)
	sock := fl.String("containerd", "", "containerd socket")
	src := fl.String("src", "", "the image to convert, in the registry")
	dst := fl.String("dst", "", "where to push the peer's form")
	kind := fl.String("kind", "", "estargz, estargz-opt, soci or soci-prefetch")
	workload := fl.String("args", "", "the workload's command (for the analyzer), as a JSON array")
	_ = fl.Parse(args)
	ctx := namespaces.WithNamespace(context.Background(), namespaces.Default)
	client, err := containerd.New(*sock)
	if err != nil {
		return err
	}
	defer client.Close()
	// One lease over everything written: the analyzer's record, which it
	// writes without one, would otherwise be garbage to containerd.
	ctx, done, err := client.WithLease(ctx)
	if err != nil {
		return err
	}
	defer done(context.Background())
	resolver := newResolver()
	start := time.Now()
	img, err := client.Pull(ctx, *src, containerd.WithResolver(resolver), containerd.WithPullUnpack)
	if err != nil {
		return fmt.Errorf("pull %s: %w", *src, err)
	}
	fmt.Fprintf(os.Stderr, "pulled %s in %v\n", *src, time.Since(start).Round(time.Millisecond))
	var cmd []string
	if *workload != "" {
		if err := json.Unmarshal([]byte(*workload), &cmd); err != nil {
			return fmt.Errorf("--args: %w", err)
		}
	}
	var record map[digest.Digest][]string
	if strings.HasSuffix(*kind, "-opt") || strings.HasSuffix(*kind, "-prefetch") {
		if record, err = analyze(ctx, client, img, cmd); err != nil {
			return err
		}
	}
	start = time.Now()
	var target ocispec.Descriptor
	switch *kind {
	case "estargz", "estargz-opt":
		layerOpts := map[digest.Digest][]estargz.Option{}
		for d, files := range record {
			layerOpts[d] = []estargz.Option{estargz.WithPrioritizedFiles(files)}
		}
		out, err := converter.Convert(ctx, client, *dst, *src, converter.WithDockerToOCI(true), converter.WithPlatform(platforms.DefaultStrict()),
			converter.WithLayerConvertFunc(estargzconvert.LayerConvertWithLayerAndCommonOptsFunc(layerOpts)))
		if err != nil {
			return fmt.Errorf("convert to eStargz: %w", err)
		}
		target = out.Target
	case "soci", "soci-prefetch":
		if target, err = sociConvert(ctx, client, *sock, img, *dst, record); err != nil {
			return fmt.Errorf("SOCI index: %w", err)
		}
	default:
		return fmt.Errorf("unknown kind %q", *kind)
	}
	fmt.Fprintf(os.Stderr, "converted %s to %s in %v\n", *src, *kind, time.Since(start).Round(time.Millisecond))
	if err := client.Push(ctx, *dst, target, containerd.WithResolver(resolver)); err != nil {
		return fmt.Errorf("push %s: %w", *dst, err)
	}
	return nil
}

// newResolver reaches the benchmark's registry over plain HTTP with its
// credentials.
func newResolver() remotes.Resolver {
	creds := func(string) (string, string, error) { return os.Getenv("PEERD_USER"), os.Getenv("PEERD_PASSWORD"), nil }
	return docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(
		docker.WithPlainHTTP(docker.MatchAllHosts),
		docker.WithAuthorizer(docker.NewDockerAuthorizer(docker.WithAuthCreds(creds))))})
}

// analyze runs the workload in stargz-snapshotter's analyzer, as
// `ctr-remote image optimize` does, and returns the files it read, per
// layer in the order first read.
func analyze(ctx context.Context, client *containerd.Client, img containerd.Image, cmd []string) (map[digest.Digest][]string, error) {
	opts := []analyzer.Option{analyzer.WithPeriod(10 * time.Second)}
	if len(cmd) > 0 {
		// ctr-remote's spec with the workload's command for arguments.
		opts = append(opts, analyzer.WithSpecOpts(func(image containerd.Image, rootfs string) ([]oci.SpecOpts, func() error, error) {
			return []oci.SpecOpts{oci.WithDefaultSpec(), oci.WithDefaultUnixDevices, oci.WithRootFSPath(rootfs),
				oci.WithImageConfig(image), oci.WithProcessArgs(cmd...)}, func() error { return nil }, nil
		}))
	}
	start := time.Now()
	recordOut, err := analyzer.Analyze(ctx, client, img.Name(), opts...)
	if err != nil {
		return nil, fmt.Errorf("analyze: %w", err)
	}
	cs := client.ContentStore()
	manifest, err := images.Manifest(ctx, cs, img.Target(), platforms.DefaultStrict())
	if err != nil {
		return nil, err
	}
	manifestDigest, err := manifestDigestOf(ctx, cs, img.Target())
	if err != nil {
		return nil, err
	}
	ra, err := cs.ReaderAt(ctx, ocispec.Descriptor{Digest: recordOut})
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	dec := json.NewDecoder(io.NewSectionReader(ra, 0, ra.Size()))
	out := map[digest.Digest][]string{}
	seen := map[string]bool{}
	for dec.More() {
		var e recorder.Entry
		if err := dec.Decode(&e); err != nil {
			return nil, err
		}
		if e.LayerIndex == nil || *e.LayerIndex >= len(manifest.Layers) || e.ManifestDigest != manifestDigest.String() {
			continue
		}
		d := manifest.Layers[*e.LayerIndex].Digest
		if key := d.String() + e.Path; !seen[key] {
			seen[key] = true
			out[d] = append(out[d], e.Path)
		}
	}
	n := 0
	for _, files := range out {
		n += len(files)
	}
	fmt.Fprintf(os.Stderr, "analyzer recorded %d files in %v\n", n, time.Since(start).Round(time.Millisecond))
	return out, nil
}

// manifestDigestOf is the digest of the platform's manifest of an image
// (the image itself when it is a manifest).
func manifestDigestOf(ctx context.Context, cs content.Store, target ocispec.Descriptor) (digest.Digest, error) {
	var found digest.Digest
	err := images.Walk(ctx, images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		switch desc.MediaType {
		case ocispec.MediaTypeImageManifest, images.MediaTypeDockerSchema2Manifest:
			if found == "" {
				found = desc.Digest
			}
			return nil, nil
		}
		return images.Children(ctx, cs, desc)
	}), target)
	if err == nil && found == "" {
		err = errors.New("the image has no manifest")
	}
	return found, err
}

// sociConvert builds a SOCI index manifest v2 for the image, as `soci
// convert` does, with a prefetch list when record is set, and returns the
// new image index to push.
func sociConvert(ctx context.Context, client *containerd.Client, sock string, img containerd.Image, dst string, record map[digest.Digest][]string) (ocispec.Descriptor, error) {
	root, err := os.MkdirTemp("", "peerd-soci-")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer os.RemoveAll(root)
	blobStore, err := socistore.NewContentStore(socistore.WithType(socistore.ContainerdContentStoreType), socistore.WithContainerdAddress(sock))
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	db, err := soci.NewDB(filepath.Join(root, "artifacts.db"))
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	opts := []soci.BuilderOption{soci.WithArtifactsDb(db)}
	if record != nil {
		var paths []string
		for _, files := range record {
			for _, f := range files {
				paths = append(paths, "/"+strings.TrimPrefix(f, "/"))
			}
		}
		opts = append(opts, soci.WithPrefetchPaths(paths))
	}
	builder, err := soci.NewIndexBuilder(client.ContentStore(), blobStore, opts...)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	batchCtx, done, err := blobStore.BatchOpen(ctx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer done(ctx)
	desc, err := builder.Convert(batchCtx, images.Image{Name: img.Name(), Target: img.Target()},
		soci.ConvertWithPlatforms(platforms.DefaultSpec()), soci.ConvertWithNoGarbageCollectionLabels())
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	is := client.ImageService()
	if _, err := is.Create(ctx, images.Image{Name: dst, Target: *desc}); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return ocispec.Descriptor{}, err
		}
		if _, err := is.Update(ctx, images.Image{Name: dst, Target: *desc}); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	return *desc, nil
}
