package snapshotter

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/fusemanager"
	"github.com/sluicehq/sluice/internal/streaming"
)

// The labels a streaming-aware pull puts on each layer's Prepare.
const (
	labelImageRef       = "containerd.io/snapshot/cri.image-ref"
	labelManifestDigest = "containerd.io/snapshot/cri.manifest-digest"
	labelLayerDigest    = "containerd.io/snapshot/cri.layer-digest"
)

// notStreamable says why a layer cannot be streamed, with a short reason
// for the fallback metric.
type notStreamable struct {
	reason string
	err    error
}

func (n *notStreamable) Error() string { return n.err.Error() }
func (n *notStreamable) Unwrap() error { return n.err }

func notStreamed(reason, format string, args ...any) error {
	return &notStreamable{reason: reason, err: fmt.Errorf(format, args...)}
}

// Resolver finds streamed layers in registries.
type Resolver struct {
	credential auth.CredentialFunc
	plainHTTP  func(host string) bool

	mu     sync.Mutex
	images map[string]*resolved
}

// resolved is what the resolver learned of one image manifest.
type resolved struct {
	at        time.Time
	err       error
	streaming ocispec.Manifest
	subject   digest.Digest
	diffIDs   map[digest.Digest]digest.Digest // source layer -> DiffID
}

// resolvedTTL is how long a resolution is reused for the image's other
// layers (and for a failure, how long before asking again).
const resolvedTTL = time.Minute

// NewResolver returns a resolver using the given credentials; plainHTTP
// says which registries talk HTTP.
func NewResolver(credential auth.CredentialFunc, plainHTTP func(host string) bool) *Resolver {
	return &Resolver{credential: credential, plainHTTP: plainHTTP, images: map[string]*resolved{}}
}

// Resolve maps a Prepare's labels to the streamed layer to mount.
func (r *Resolver) Resolve(ctx context.Context, labels map[string]string) (*fusemanager.LayerRef, error) {
	imageRef, manifest, layer := labels[labelImageRef], labels[labelManifestDigest], labels[labelLayerDigest]
	if imageRef == "" || manifest == "" || layer == "" {
		return nil, notStreamed("no_labels", "the pull did not label the layer with its image (use `sluice pull`, or CRI with disable_snapshot_annotations = false)")
	}
	ref, err := registry.ParseReference(imageRef)
	if err != nil {
		return nil, notStreamed("bad_reference", "image reference %q: %v", imageRef, err)
	}
	manifestDigest, err := digest.Parse(manifest)
	if err != nil {
		return nil, notStreamed("bad_reference", "manifest digest %q: %v", manifest, err)
	}
	layerDigest, err := digest.Parse(layer)
	if err != nil {
		return nil, notStreamed("bad_reference", "layer digest %q: %v", layer, err)
	}
	res := r.resolveImage(ctx, ref, manifestDigest)
	if res.err != nil {
		return nil, res.err
	}
	for _, l := range res.streaming.Layers {
		if l.Annotations[streaming.AnnotationSourceDigest] != layerDigest.String() {
			continue
		}
		out := &fusemanager.LayerRef{Registry: ref.Registry, PlainHTTP: r.plainHTTP(ref.Registry), Repository: ref.Repository,
			Digest: l.Digest, Size: l.Size, SourceDigest: layerDigest, DiffID: res.diffIDs[layerDigest], ImageRef: imageRef}
		out.TOCDigest = digest.Digest(l.Annotations[streaming.AnnotationTOCDigest])
		out.TOCOffset, _ = strconv.ParseInt(l.Annotations[streaming.AnnotationTOCOffset], 10, 64)
		out.TOCSize, _ = strconv.ParseInt(l.Annotations[streaming.AnnotationTOCSize], 10, 64)
		if err := out.Validate(); err != nil {
			return nil, notStreamed("bad_artifact", "streaming artifact of %s: %v", imageRef, err)
		}
		return out, nil
	}
	return nil, notStreamed("bad_artifact", "the streaming artifact of %s has no layer made from %s", imageRef, layerDigest)
}

func (r *Resolver) resolveImage(ctx context.Context, ref registry.Reference, manifest digest.Digest) *resolved {
	key := ref.Registry + "/" + ref.Repository + "@" + manifest.String()
	r.mu.Lock()
	res, ok := r.images[key]
	r.mu.Unlock()
	if ok && time.Since(res.at) < resolvedTTL {
		return res
	}
	res = r.lookup(ctx, ref, manifest)
	res.at = time.Now()
	r.mu.Lock()
	r.images[key] = res
	for k, v := range r.images {
		if time.Since(v.at) > resolvedTTL {
			delete(r.images, k)
		}
	}
	r.mu.Unlock()
	return res
}

// lookup finds the streaming manifest of an image manifest: a referrer of
// the manifest itself, or, for an image pulled through an index, the
// index's referrer for the manifest's platform. It checks the chain of
// trust: the artifact's subject is the image, its config is the image's.
func (r *Resolver) lookup(ctx context.Context, ref registry.Reference, manifest digest.Digest) *resolved {
	c := client.New(ref.Registry, client.Options{PlainHTTP: r.plainHTTP(ref.Registry), Credential: r.credential, UserAgent: "sluice-snapshotter"})
	res := &resolved{}
	// The image's manifest and config, and its referrers, are asked for
	// at the same time: each is a round trip on the pull's critical path.
	type imageAnswer struct {
		parts *imageParts
		err   error
	}
	imageDone := make(chan imageAnswer, 1)
	go func() {
		p, err := r.image(ctx, c, ref.Repository, manifest)
		imageDone <- imageAnswer{p, err}
	}()
	refs, err := c.Referrers(ctx, ref.Repository, manifest, streaming.ArtifactType)
	img := <-imageDone
	if img.err != nil {
		res.err = notStreamed("registry", "reading the image manifest %s: %v", manifest, img.err)
		return res
	}
	orig := img.parts
	if err != nil {
		res.err = notStreamed("registry", "looking up streaming referrers: %v", err)
		return res
	}
	subject := manifest
	if len(refs) == 0 && ref.Reference != "" {
		subject, refs, err = r.byIndex(ctx, c, ref, manifest)
		if err != nil {
			res.err = err
			return res
		}
	}
	if len(refs) == 0 {
		res.err = notStreamed("no_artifact", "the image has no streaming artifact yet (create one with `sluice artifact-streaming create`, or enable auto-streaming on the repository)")
		return res
	}
	b, _, err := c.GetManifest(ctx, ref.Repository, refs[0].Digest.String())
	if err != nil {
		res.err = notStreamed("registry", "reading the streaming manifest: %v", err)
		return res
	}
	if err := json.Unmarshal(b, &res.streaming); err != nil {
		res.err = notStreamed("bad_artifact", "streaming manifest %s: %v", refs[0].Digest, err)
		return res
	}
	switch {
	case res.streaming.ArtifactType != streaming.ArtifactType:
		res.err = notStreamed("bad_artifact", "referrer %s is not a streaming artifact", refs[0].Digest)
	case res.streaming.Subject == nil || res.streaming.Subject.Digest != subject:
		res.err = notStreamed("bad_artifact", "streaming manifest %s does not have the image as subject", refs[0].Digest)
	case res.streaming.Config.Digest != orig.manifest.Config.Digest:
		res.err = notStreamed("bad_artifact", "streaming manifest %s does not share the image's config", refs[0].Digest)
	}
	res.subject = subject
	res.diffIDs = map[digest.Digest]digest.Digest{}
	for i, l := range orig.manifest.Layers {
		if i < len(orig.config.RootFS.DiffIDs) {
			res.diffIDs[l.Digest] = orig.config.RootFS.DiffIDs[i]
		}
	}
	return res
}

type imageParts struct {
	manifest ocispec.Manifest
	config   ocispec.Image
}

// image reads an image manifest and its config.
func (r *Resolver) image(ctx context.Context, c *client.Client, repo string, manifest digest.Digest) (*imageParts, error) {
	b, _, err := c.GetManifest(ctx, repo, manifest.String())
	if err != nil {
		return nil, err
	}
	var p imageParts
	if err := json.Unmarshal(b, &p.manifest); err != nil {
		return nil, err
	}
	rr, err := c.Repository(repo)
	if err != nil {
		return nil, err
	}
	cfg, err := rr.Blobs().Fetch(ctx, p.manifest.Config)
	if err != nil {
		return nil, fmt.Errorf("image config %s: %w", p.manifest.Config.Digest, err)
	}
	defer cfg.Close()
	if err := json.NewDecoder(cfg).Decode(&p.config); err != nil {
		return nil, fmt.Errorf("image config %s: %w", p.manifest.Config.Digest, err)
	}
	return &p, nil
}

// byIndex looks for the streaming referrer of the index the image reference
// names, for the platform of manifest.
func (r *Resolver) byIndex(ctx context.Context, c *client.Client, ref registry.Reference, manifest digest.Digest) (digest.Digest, []ocispec.Descriptor, error) {
	b, mt, err := c.GetManifest(ctx, ref.Repository, ref.Reference)
	if err != nil {
		return "", nil, notStreamed("registry", "reading %s: %v", ref, err)
	}
	if mt != ocispec.MediaTypeImageIndex && mt != "application/vnd.docker.distribution.manifest.list.v2+json" {
		return manifest, nil, nil
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return "", nil, notStreamed("registry", "index %s: %v", ref, err)
	}
	var platform *ocispec.Platform
	for _, d := range idx.Manifests {
		if d.Digest == manifest {
			platform = d.Platform
		}
	}
	if platform == nil {
		return manifest, nil, nil
	}
	indexDigest := digest.FromBytes(b)
	refs, err := c.Referrers(ctx, ref.Repository, indexDigest, streaming.ArtifactType)
	if err != nil {
		return "", nil, notStreamed("registry", "looking up streaming referrers of the index: %v", err)
	}
	var match []ocispec.Descriptor
	for _, d := range refs {
		a := d.Annotations
		if a[streaming.AnnotationPlatformOS] == platform.OS && a[streaming.AnnotationPlatformArch] == platform.Architecture &&
			a[streaming.AnnotationPlatformVariant] == platform.Variant {
			match = append(match, d)
		}
	}
	return indexDigest, match, nil
}
