package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/fusemanager"
	"github.com/sluicehq/sluice/internal/streaming"
	"github.com/sluicehq/sluice/internal/trust"
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

// Resolver finds streamed layers in registries, and mounts only those
// whose streaming artifact is signed by a key the node trusts.
type Resolver struct {
	credential auth.CredentialFunc
	plainHTTP  func(host string) bool
	trust      *Trust

	// maxTOCBytes refuses, before the FUSE manager fetches anything, a
	// layer whose TOC annotation is over the node's limit.
	maxTOCBytes int64

	mu     sync.Mutex
	images map[string]*resolved
}

// ResolverOption configures NewResolver.
type ResolverOption func(*Resolver)

// WithLimits has the resolver refuse layers whose TOC, as the streaming
// manifest's annotation gives its size, is over the node's limit.
func WithLimits(l LimitsConfig) ResolverOption {
	return func(r *Resolver) { r.maxTOCBytes = l.MaxTOCBytes }
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
// says which registries talk HTTP, trust which signatures count.
func NewResolver(credential auth.CredentialFunc, plainHTTP func(host string) bool, trust *Trust, opts ...ResolverOption) *Resolver {
	r := &Resolver{credential: credential, plainHTTP: plainHTTP, trust: trust, images: map[string]*resolved{}, maxTOCBytes: DefaultMaxTOCBytes}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Resolve maps a Prepare's labels to the streamed layer to mount.
func (r *Resolver) Resolve(ctx context.Context, labels map[string]string) (*fusemanager.LayerRef, error) {
	imageRef, manifest, layer := labels[labelImageRef], labels[labelManifestDigest], labels[labelLayerDigest]
	if imageRef == "" || manifest == "" || layer == "" {
		return nil, notStreamed(ReasonNoLabels, "the pull did not label the layer with its image (use `sluice pull`, or CRI with disable_snapshot_annotations = false)")
	}
	ref, err := registry.ParseReference(imageRef)
	if err != nil {
		return nil, notStreamed(ReasonBadReference, "image reference %q: %v", imageRef, err)
	}
	manifestDigest, err := digest.Parse(manifest)
	if err != nil {
		return nil, notStreamed(ReasonBadReference, "manifest digest %q: %v", manifest, err)
	}
	layerDigest, err := digest.Parse(layer)
	if err != nil {
		return nil, notStreamed(ReasonBadReference, "layer digest %q: %v", layer, err)
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
			return nil, notStreamed(ReasonBadArtifact, "streaming artifact of %s: %v", imageRef, err)
		}
		if out.TOCSize > r.maxTOCBytes {
			return nil, notStreamed(ReasonOverLimit, "the TOC of streamed layer %s is %d bytes, more than %d (limits.maxTOCBytes)", out.Digest, out.TOCSize, r.maxTOCBytes)
		}
		return out, nil
	}
	return nil, notStreamed(ReasonBadArtifact, "the streaming artifact of %s has no layer made from %s", imageRef, layerDigest)
}

// Forget drops what the resolver learned of a repository's images, so
// that the next layer asks the registry again (with the credentials a new
// pull gave, say).
func (r *Resolver) Forget(host, repository string) {
	prefix := host + "/" + repository + "@"
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.images {
		if strings.HasPrefix(k, prefix) {
			delete(r.images, k)
		}
	}
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
// index's referrer for the manifest's platform. Only artifacts signed by a
// key the node trusts count; of those, the newest format version first,
// then by digest, the first whose bindings to the image hold.
func (r *Resolver) lookup(ctx context.Context, ref registry.Reference, manifest digest.Digest) *resolved {
	c := client.New(ref.Registry, client.Options{PlainHTTP: r.plainHTTP(ref.Registry), Credential: r.credential, UserAgent: "sluice-snapshotter"})
	res := &resolved{}
	// The image's manifest and config, its referrers and the keys to
	// verify them with are asked for at the same time: each is a round
	// trip on the pull's critical path.
	type imageAnswer struct {
		parts *imageParts
		err   error
	}
	imageDone := make(chan imageAnswer, 1)
	go func() {
		p, err := r.image(ctx, c, ref.Repository, manifest)
		imageDone <- imageAnswer{p, err}
	}()
	type keysAnswer struct {
		keys trust.KeySet
		err  error
	}
	keysDone := make(chan keysAnswer, 1)
	go func() {
		k, err := r.trust.Keys(ctx, c, false)
		keysDone <- keysAnswer{k, err}
	}()
	refs, err := c.Referrers(ctx, ref.Repository, manifest, "")
	img := <-imageDone
	keys := <-keysDone
	if img.err != nil {
		res.err = notStreamed(registryReason(img.err), "reading the image manifest %s: %v", manifest, img.err)
		return res
	}
	if err != nil {
		res.err = notStreamed(registryReason(err), "looking up streaming referrers: %v", err)
		return res
	}
	subject, platform := manifest, (*ocispec.Platform)(nil)
	if !hasStreaming(refs) {
		subject, platform, refs, err = r.viaIndex(ctx, c, ref, manifest)
		if err != nil {
			res.err = err
			return res
		}
	}
	if !hasStreaming(refs) {
		res.err = notStreamed(ReasonNoArtifact, "the image has no streaming artifact yet (create one with `sluice artifact-streaming create`, or enable auto-streaming on the repository)")
		return res
	}
	if keys.err != nil {
		res.err = keys.err
		return res
	}
	candidates, err := r.trustedCandidates(ctx, c, refs, subject, platform, keys.keys)
	if err != nil {
		res.err = err
		return res
	}
	orig := img.parts
	var firstErr error
	for _, d := range candidates {
		m, err := r.streamingManifest(ctx, c, ref.Repository, d, subject, platform, orig)
		if err == nil {
			res.streaming = *m
			firstErr = nil
			break
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		res.err = firstErr
		return res
	}
	res.subject = subject
	res.diffIDs = map[digest.Digest]digest.Digest{}
	for i, l := range orig.manifest.Layers {
		res.diffIDs[l.Digest] = orig.config.RootFS.DiffIDs[i]
	}
	return res
}

func hasStreaming(refs []ocispec.Descriptor) bool {
	for _, d := range refs {
		if d.ArtifactType == streaming.ArtifactType {
			return true
		}
	}
	return false
}

// trustedCandidates returns the streaming artifacts among refs (of subject,
// for platform when subject is an index) that a signature by a trusted key
// vouches for, in the order to try them: the newest format version this
// node reads first, then by digest. Under trust: any (keys nil) every
// artifact counts.
func (r *Resolver) trustedCandidates(ctx context.Context, c *client.Client, refs []ocispec.Descriptor, subject digest.Digest, platform *ocispec.Platform, keys trust.KeySet) ([]ocispec.Descriptor, error) {
	var artifacts []ocispec.Descriptor
	for _, d := range refs {
		if d.ArtifactType != streaming.ArtifactType || !streaming.SupportedVersion(d.Annotations[streaming.AnnotationVersion]) {
			continue
		}
		if platform != nil && !samePlatform(d.Annotations, platform) {
			continue
		}
		artifacts = append(artifacts, d)
	}
	if len(artifacts) == 0 {
		return nil, notStreamed(ReasonNoArtifact, "the image has no streaming artifact this node can read (format %s) for its platform", streaming.FormatVersion)
	}
	sort.SliceStable(artifacts, func(i, j int) bool {
		vi := streaming.VersionNumber(artifacts[i].Annotations[streaming.AnnotationVersion])
		vj := streaming.VersionNumber(artifacts[j].Annotations[streaming.AnnotationVersion])
		if vi != vj {
			return vi > vj
		}
		return artifacts[i].Digest < artifacts[j].Digest
	})
	if keys == nil {
		return artifacts, nil
	}
	signed, unknownKey := keys.Vouched(refs, subject)
	if len(signed) == 0 && unknownKey {
		// Signed by a key the node has not seen: the registry may have
		// rotated since its keys were fetched.
		fresh, err := r.trust.Keys(ctx, c, true)
		if err != nil {
			return nil, err
		}
		signed, _ = fresh.Vouched(refs, subject)
	}
	var out []ocispec.Descriptor
	for _, d := range artifacts {
		if signed[d.Digest] {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		return nil, untrusted("none of the %d streaming artifacts of %s is signed by a key this node trusts for %s (trusted: %s)",
			len(artifacts), subject, c.Host, strings.Join(keys.IDs(), ", "))
	}
	return out, nil
}

func samePlatform(a map[string]string, p *ocispec.Platform) bool {
	return a[streaming.AnnotationPlatformOS] == p.OS && a[streaming.AnnotationPlatformArch] == p.Architecture &&
		a[streaming.AnnotationPlatformVariant] == p.Variant
}

// streamingManifest fetches a streaming manifest (verified against its
// digest) and checks its bindings to the image before anything is read
// from it: its subject is the manifest or index the pull resolved, it
// shares the image's config, and its layers are made from the image's
// layers, one for one and in order.
func (r *Resolver) streamingManifest(ctx context.Context, c *client.Client, repo string, d ocispec.Descriptor, subject digest.Digest, platform *ocispec.Platform, orig *imageParts) (*ocispec.Manifest, error) {
	b, _, err := c.GetManifest(ctx, repo, d.Digest.String())
	if err != nil {
		return nil, notStreamed(registryReason(err), "reading the streaming manifest: %v", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, notStreamed(ReasonBadArtifact, "streaming manifest %s: %v", d.Digest, err)
	}
	switch {
	case m.ArtifactType != streaming.ArtifactType:
		return nil, notStreamed(ReasonBadArtifact, "referrer %s is not a streaming artifact", d.Digest)
	case m.Subject == nil || m.Subject.Digest != subject:
		return nil, notStreamed(ReasonBadArtifact, "streaming manifest %s does not have the image as subject", d.Digest)
	case platform != nil && !samePlatform(m.Annotations, platform):
		return nil, notStreamed(ReasonBadArtifact, "streaming manifest %s is not for the image's platform", d.Digest)
	case m.Config.Digest != orig.manifest.Config.Digest:
		return nil, notStreamed(ReasonBadArtifact, "streaming manifest %s does not share the image's config", d.Digest)
	case len(m.Layers) != len(orig.manifest.Layers):
		return nil, notStreamed(ReasonBadArtifact, "streaming manifest %s has %d layers, the image %d", d.Digest, len(m.Layers), len(orig.manifest.Layers))
	}
	for i, l := range m.Layers {
		if src := l.Annotations[streaming.AnnotationSourceDigest]; src != orig.manifest.Layers[i].Digest.String() {
			return nil, notStreamed(ReasonBadArtifact, "layer %d of streaming manifest %s is made from %s, not from the image's layer %s", i, d.Digest, src, orig.manifest.Layers[i].Digest)
		}
	}
	return &m, nil
}

type imageParts struct {
	manifest ocispec.Manifest
	config   ocispec.Image
}

// maxConfigSize bounds the image configs the resolver reads.
const maxConfigSize = 8 << 20

// image reads an image manifest and its config, each checked against its
// digest: the config's DiffIDs are what the streamed layers must match.
func (r *Resolver) image(ctx context.Context, c *client.Client, repo string, manifest digest.Digest) (*imageParts, error) {
	b, _, err := c.GetManifest(ctx, repo, manifest.String())
	if err != nil {
		return nil, err
	}
	var p imageParts
	if err := json.Unmarshal(b, &p.manifest); err != nil {
		return nil, err
	}
	if p.manifest.Config.Size > maxConfigSize {
		return nil, fmt.Errorf("image config %s is %d bytes, more than %d", p.manifest.Config.Digest, p.manifest.Config.Size, maxConfigSize)
	}
	rr, err := c.Repository(repo)
	if err != nil {
		return nil, err
	}
	cfg, err := content.FetchAll(ctx, rr.Blobs(), p.manifest.Config)
	if err != nil {
		return nil, fmt.Errorf("image config %s: %w", p.manifest.Config.Digest, err)
	}
	if err := json.Unmarshal(cfg, &p.config); err != nil {
		return nil, fmt.Errorf("image config %s: %w", p.manifest.Config.Digest, err)
	}
	if len(p.config.RootFS.DiffIDs) != len(p.manifest.Layers) {
		return nil, fmt.Errorf("image config %s lists %d layer DiffIDs for %d layers", p.manifest.Config.Digest, len(p.config.RootFS.DiffIDs), len(p.manifest.Layers))
	}
	return &p, nil
}

// byIndex looks for the referrers of the index the image reference names,
// when it is an index listing manifest; it returns the index's digest, the
// platform it gives manifest, and every referrer of the index.
func (r *Resolver) byIndex(ctx context.Context, c *client.Client, ref registry.Reference, manifest digest.Digest) (digest.Digest, *ocispec.Platform, []ocispec.Descriptor, error) {
	b, mt, err := c.GetManifest(ctx, ref.Repository, ref.Reference)
	if err != nil {
		return "", nil, nil, notStreamed(registryReason(err), "reading %s: %v", ref, err)
	}
	platform, err := platformIn(b, mt, manifest)
	if err != nil {
		return "", nil, nil, notStreamed(ReasonRegistry, "index %s: %v", ref, err)
	}
	if platform == nil {
		return manifest, nil, nil, nil
	}
	indexDigest := digest.FromBytes(b)
	refs, err := c.Referrers(ctx, ref.Repository, indexDigest, "")
	if err != nil {
		return "", nil, nil, notStreamed(registryReason(err), "looking up streaming referrers of the index: %v", err)
	}
	return indexDigest, platform, refs, nil
}

// OpenOriginal opens the original layer a streamed layer was made from, in
// its registry, with the node's credentials; what it reads is checked
// against the layer's digest, and a mismatch ends the read with an error.
func (r *Resolver) OpenOriginal(ctx context.Context, ref fusemanager.LayerRef) (io.ReadCloser, error) {
	c := client.New(ref.Registry, client.Options{PlainHTTP: ref.PlainHTTP, Credential: r.credential, UserAgent: "sluice-snapshotter"})
	rr, err := c.Repository(ref.Repository)
	if err != nil {
		return nil, err
	}
	desc, err := rr.Blobs().Resolve(ctx, ref.SourceDigest.String())
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", ref.SourceDigest, err)
	}
	rc, err := rr.Blobs().Fetch(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", ref.SourceDigest, err)
	}
	return verified{content.NewVerifyReader(rc, desc), rc}, nil
}

// verified reads through a digest check and closes the body.
type verified struct {
	v *content.VerifyReader
	io.Closer
}

func (v verified) Read(p []byte) (int, error) {
	n, err := v.v.Read(p)
	if errors.Is(err, io.EOF) {
		if verr := v.v.Verify(); verr != nil {
			return n, verr
		}
	}
	return n, err
}

// registryReason is the fallback reason of a registry's refusal: 401 or
// 403 (no credentials for the repository, or ones that do not give pull)
// is "unauthorized", anything else "registry".
func registryReason(err error) string {
	var e *client.Error
	if errors.As(err, &e) && (e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden) {
		return ReasonUnauthorized
	}
	var oe *errcode.ErrorResponse
	if errors.As(err, &oe) && (oe.StatusCode == http.StatusUnauthorized || oe.StatusCode == http.StatusForbidden) {
		return ReasonUnauthorized
	}
	return ReasonRegistry
}
