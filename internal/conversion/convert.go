package conversion

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
	"github.com/sluicehq/sluice/internal/streaming"
)

// maxConfigSize bounds the image configs a conversion reads.
const maxConfigSize = 8 << 20

// job is one running conversion: what it is converting and what it has
// written, so that a cancel can take it all back.
type job struct {
	s        *Service
	op       *metadata.Operation
	p        *progress
	blobs    []digest.Digest // converted layers (and a signature's empty config) this job stored
	referrer []digest.Digest // streaming manifests and signatures this job stored
	// fresh holds the layers this job converted, by source digest, in
	// their latest form (split for a start).
	fresh map[digest.Digest]ocispec.Descriptor
}

// convert runs a conversion operation and returns its result JSON. It
// writes as the registry itself: the one writer of streaming artifacts
// that needs no streaming/write grant.
func (s *Service) convert(ctx context.Context, op *metadata.Operation, p *progress) (string, error) {
	ctx = registry.AllowStreamingWrites(ctx)
	j := &job{s: s, op: op, p: p, fresh: map[digest.Digest]ocispec.Descriptor{}}
	// An earlier attempt that died (a crash, a lost lease) may have left
	// a converted layer half uploaded: drop it before starting again.
	if err := s.reg.DropOwnedUploads(ctx, op.Repository, uploadOwner(op)); err != nil {
		return "", err
	}
	descs, err := j.run(ctx)
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, errImageDeleted) {
			j.rollback()
		}
		return "", err
	}
	return resultJSON(descs), nil
}

func (j *job) run(ctx context.Context) ([]ocispec.Descriptor, error) {
	repo, dgst := j.op.Repository, digest.Digest(j.op.Digest)
	m, err := j.s.reg.GetManifest(ctx, repo, oci.Reference{Digest: dgst.String()}, true)
	if errors.Is(err, registry.ErrManifestUnknown) {
		// Start found it: it was deleted since, perhaps before the delete
		// had canceled this operation.
		return nil, fmt.Errorf("image %s@%s: %w", repo, dgst, errImageDeleted)
	}
	if err != nil {
		return nil, err
	}
	if m.ArtifactType == streaming.ArtifactType {
		return nil, errorf(CodeUnsupportedArtifact, messageUnsupportedArtifact)
	}
	parsed, err := oci.ParseManifest(m.MediaType, m.Payload)
	if err != nil {
		return nil, errorf(CodeUnsupportedMediaType, "%s: %v. %s", dgst, err, messageUnsupportedMedia)
	}
	subject := ocispec.Descriptor{MediaType: m.MediaType, Digest: dgst, Size: m.Size}
	if !oci.IsIndexMediaType(parsed.MediaType) {
		img, err := j.prepareImage(ctx, parsed, nil)
		if err != nil {
			return nil, err
		}
		j.p.total.Store(img.sourceBytes())
		d, err := j.convertImage(ctx, img, subject)
		if err != nil {
			return nil, err
		}
		return []ocispec.Descriptor{d}, nil
	}
	return j.convertIndex(ctx, parsed, subject)
}

// image is an image manifest ready to convert: its parsed manifest and
// config, and its platform.
type image struct {
	manifest *oci.Manifest
	config   ocispec.Image
	platform ocispec.Platform
}

func (img *image) sourceBytes() int64 {
	var n int64
	for _, l := range img.manifest.Layers {
		n += l.Size
	}
	return n
}

// prepareImage reads an image's config and checks that it is a runnable
// Linux image. platform, when known from an index, wins over the config's.
func (j *job) prepareImage(ctx context.Context, m *oci.Manifest, platform *ocispec.Platform) (*image, error) {
	if m.Config == nil || (m.Config.MediaType != oci.MediaTypeImageConfig && m.Config.MediaType != oci.MediaTypeDockerImageConfig) {
		return nil, errorf(CodeImageNotRunnable, "the manifest's config is %s, not an image config", configType(m))
	}
	if len(m.Layers) == 0 {
		return nil, errorf(CodeImageNotRunnable, "the image has no layers")
	}
	img := &image{manifest: m}
	if m.Config.Size > maxConfigSize {
		return nil, errorf(CodeImageNotRunnable, "the image config is %d bytes, more than %d", m.Config.Size, maxConfigSize)
	}
	if err := j.s.reg.ReadJSONBlob(ctx, j.op.Repository, m.Config.Digest, maxConfigSize, &img.config); err != nil {
		return nil, fmt.Errorf("read image config %s: %w", m.Config.Digest, err)
	}
	img.platform = img.config.Platform
	if platform != nil {
		img.platform = *platform
	}
	if !streaming.SupportedPlatform(img.platform) {
		return nil, errorf(CodeUnsupportedPlatform, "%s", (&streaming.PlatformError{Platform: img.platform}).Error())
	}
	if len(img.config.RootFS.DiffIDs) != len(m.Layers) {
		return nil, errorf(CodeImageNotRunnable, "the config lists %d layer diff IDs for %d layers", len(img.config.RootFS.DiffIDs), len(m.Layers))
	}
	for _, l := range m.Layers {
		if !convertibleLayer(l.MediaType) || len(l.URLs) > 0 {
			return nil, errorf(CodeUnsupportedMediaType, "layer %s is %s, which cannot be streamed", l.Digest, l.MediaType)
		}
	}
	return img, nil
}

func configType(m *oci.Manifest) string {
	if m.Config == nil {
		return "missing"
	}
	return m.Config.MediaType
}

func convertibleLayer(mt string) bool {
	switch mt {
	case oci.MediaTypeImageLayer, oci.MediaTypeImageLayerGzip, oci.MediaTypeImageLayerZstd, oci.MediaTypeDockerLayerGzip,
		"application/vnd.docker.image.rootfs.diff.tar":
		return true
	}
	return false
}

// convertIndex converts every Linux image of an index, each streaming
// manifest having the index as subject.
func (j *job) convertIndex(ctx context.Context, index *oci.Manifest, subject ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	var images []*image
	var skipped []string
	for _, child := range index.Manifests {
		if oci.IsIndexMediaType(child.MediaType) || !oci.IsManifestMediaType(child.MediaType) {
			skipped = append(skipped, child.Digest.String()+" ("+child.MediaType+")")
			continue
		}
		if child.Platform != nil && !streaming.SupportedPlatform(*child.Platform) {
			skipped = append(skipped, child.Digest.String()+" ("+child.Platform.OS+")")
			continue
		}
		cm, err := j.s.reg.GetManifest(ctx, j.op.Repository, oci.Reference{Digest: child.Digest.String()}, true)
		if err != nil {
			return nil, fmt.Errorf("read child manifest %s: %w", child.Digest, err)
		}
		parsed, err := oci.ParseManifest(cm.MediaType, cm.Payload)
		if err != nil {
			skipped = append(skipped, child.Digest.String())
			continue
		}
		img, err := j.prepareImage(ctx, parsed, child.Platform)
		if e, ok := codeOf(err); ok {
			skipped = append(skipped, child.Digest.String()+" ("+e.Message+")")
			continue
		}
		if err != nil {
			return nil, err
		}
		images = append(images, img)
	}
	if len(images) == 0 {
		return nil, errorf(CodeNoSupportedPlatform, "none of the %d manifests of the index is a runnable Linux image: %v", len(index.Manifests), skipped)
	}
	var total int64
	for _, img := range images {
		total += img.sourceBytes()
	}
	j.p.total.Store(total)
	var out []ocispec.Descriptor
	for _, img := range images {
		d, err := j.convertImage(ctx, img, subject)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// convertImage converts an image's layers and pushes its streaming manifest
// with the given subject. The manifest is deterministic, so a retry after a
// crash pushes the same bytes and never a second artifact.
func (j *job) convertImage(ctx context.Context, img *image, subject ocispec.Descriptor) (ocispec.Descriptor, error) {
	layers := make([]ocispec.Descriptor, len(img.manifest.Layers))
	for i, l := range img.manifest.Layers {
		d, err := j.convertLayer(ctx, l, digest.Digest(img.config.RootFS.DiffIDs[i]))
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		layers[i] = d
	}
	// Before the manifest that makes nodes stream the image.
	j.inferStartup(ctx, img, layers)
	m := streaming.Manifest(*img.manifest.Config, layers, subject, img.platform)
	payload, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	dgst := digest.FromBytes(payload)
	if err := j.sign(ctx, subject, dgst); err != nil {
		return ocispec.Descriptor{}, err
	}
	if _, err := j.s.reg.PutManifest(ctx, j.op.Repository, oci.Reference{Digest: dgst.String()}, ocispec.MediaTypeImageManifest, payload, nil); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push streaming manifest: %w", err)
	}
	j.referrer = append(j.referrer, dgst)
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: dgst, Size: int64(len(payload)),
		ArtifactType: streaming.ArtifactType, Annotations: m.Annotations}, nil
}

// convertLayer returns the converted twin of a source layer: from the cache
// of layers converted before when it is still stored, otherwise converted
// now and pushed into the repository through an ordinary upload.
func (j *job) convertLayer(ctx context.Context, src ocispec.Descriptor, diffID digest.Digest) (ocispec.Descriptor, error) {
	repo := j.op.Repository
	if cached, err := j.s.store.GetConvertedLayer(ctx, src.Digest.String(), streaming.FormatVersion); err == nil {
		if err := j.s.reg.LinkStoredBlob(ctx, repo, digest.Digest(cached.Digest)); err == nil {
			j.p.done.Add(src.Size)
			var ann map[string]string
			if err := json.Unmarshal([]byte(cached.Annotations), &ann); err == nil {
				// Taken from the cache, even one this job converted
				// for another image of an index: shared as it is.
				delete(j.fresh, src.Digest)
				return ocispec.Descriptor{MediaType: cached.MediaType, Digest: digest.Digest(cached.Digest), Size: cached.Size, Annotations: ann}, nil
			}
		}
	}
	res, err := j.convertAndPush(ctx, src)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if res.DiffID != diffID {
		return ocispec.Descriptor{}, fmt.Errorf("layer %s uncompresses to %s but the image config says %s", src.Digest, res.DiffID, diffID)
	}
	res.SourceDigest = src.Digest
	d := res.Descriptor()
	if err := j.rememberConverted(ctx, d); err != nil {
		return ocispec.Descriptor{}, err
	}
	j.fresh[src.Digest] = d
	return d, nil
}

// rememberConverted records d as the converted twin of the source layer its
// annotations name, for the next image with that layer.
func (j *job) rememberConverted(ctx context.Context, d ocispec.Descriptor) error {
	ann, _ := json.Marshal(d.Annotations)
	return j.s.store.PutConvertedLayer(ctx, &metadata.ConvertedLayer{SourceDigest: d.Annotations[streaming.AnnotationSourceDigest],
		FormatVersion: streaming.FormatVersion, Digest: d.Digest.String(), Size: d.Size, MediaType: d.MediaType, Annotations: string(ann)})
}

// convertAndPush converts a layer into an upload session of the
// repository, so the converted blob is stored, verified and linked like any
// pushed blob. On any failure the session and its parts are dropped.
func (j *job) convertAndPush(ctx context.Context, src ocispec.Descriptor) (*streaming.Result, error) {
	opts := j.s.opts.Streaming
	if err := j.s.memory.Acquire(ctx, opts.MemoryBudget); err != nil {
		return nil, err
	}
	defer j.s.memory.Release(opts.MemoryBudget)
	in, err := j.s.reg.OpenBlob(ctx, j.op.Repository, src.Digest)
	if err != nil {
		return nil, fmt.Errorf("open layer %s: %w", src.Digest, err)
	}
	defer in.Close()
	base := j.p.done.Load()
	opts.Progress = func(consumed int64) { j.p.done.Store(base + consumed) }
	var source io.Reader = in
	if j.s.sourceHook != nil {
		source = j.s.sourceHook(source)
	}
	res, err := j.pushStream(ctx, func(w io.Writer) (*streaming.Result, error) {
		return streaming.Convert(ctx, source, w, opts)
	})
	var store *storeError
	switch {
	case errors.As(err, &store):
		return nil, fmt.Errorf("store converted layer of %s: %w", src.Digest, store.err)
	case err != nil:
		return nil, layerError(src, err)
	}
	j.p.done.Store(base + src.Size)
	return res, nil
}

// pushStream stores what write writes as a blob of the repository, through
// an upload session of the job's own. It returns write's error as it is,
// and a failure to store as a *storeError; either way the session and its
// parts are dropped.
func (j *job) pushStream(ctx context.Context, write func(io.Writer) (*streaming.Result, error)) (*streaming.Result, error) {
	repo := j.op.Repository
	up, err := j.s.reg.StartOwnedUpload(ctx, repo, uploadOwner(j.op))
	if err != nil {
		return nil, &storeError{err}
	}
	pr, pw := io.Pipe()
	type outcome struct {
		res *streaming.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := write(pw)
		pw.CloseWithError(err)
		done <- outcome{res, err}
	}()
	_, werr := j.s.reg.WriteChunk(ctx, repo, up.ID, registry.Chunk{Start: 0, Length: -1, Body: pr})
	// The writer's next write fails with errUploadEnded: an upload that
	// stopped early (the store full) is the cause, not the writer.
	pr.CloseWithError(errUploadEnded)
	out := <-done
	cleanup := context.WithoutCancel(ctx)
	if out.err != nil || werr != nil {
		_ = j.s.reg.CancelUpload(cleanup, repo, up.ID)
		if out.err != nil && !errors.Is(out.err, errUploadEnded) {
			return nil, out.err
		}
		return nil, &storeError{cmp.Or(werr, out.err)}
	}
	if _, err := j.s.reg.CompleteUpload(ctx, repo, up.ID, out.res.Digest, registry.Chunk{Start: -1, Length: -1, Body: http0{}}); err != nil {
		_ = j.s.reg.CancelUpload(cleanup, repo, up.ID)
		return nil, &storeError{err}
	}
	j.blobs = append(j.blobs, out.res.Digest)
	return out.res, nil
}

// storeError is a failure to store a converted blob.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// errUploadEnded is what the converter meets when the upload of its output
// stopped before it finished writing.
var errUploadEnded = errors.New("the upload of the converted layer ended")

// uploadOwner names the uploads of an operation's conversions.
func uploadOwner(op *metadata.Operation) string { return "conv-" + op.ID }

// http0 is an empty body.
type http0 struct{}

func (http0) Read([]byte) (int, error) { return 0, io.EOF }

// layerError classifies a converter failure: hostile or corrupt input can
// never convert, so it is not retried.
func layerError(src ocispec.Descriptor, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	// A limit is named by its configuration key, so that the operator who
	// reads the operation's error knows what to raise.
	var limit *streaming.LimitError
	if errors.As(err, &limit) {
		key := "streaming.limits." + limit.Limit
		if limit.Limit == streaming.LimitConversionMemory {
			key = "streaming.conversionMemory"
		}
		return errorf(CodeImageNotRunnable, "layer %s %s (limit %s)", src.Digest, limit.Problem, key)
	}
	if errors.Is(err, streaming.ErrCorruptInput) || errors.Is(err, streaming.ErrUnsupportedInput) || errors.Is(err, streaming.ErrLimitExceeded) {
		return errorf(CodeImageNotRunnable, "layer %s cannot be converted: %v", src.Digest, err)
	}
	return fmt.Errorf("convert layer %s: %w", src.Digest, err)
}

// rollback takes back what a canceled job stored: its streaming manifests
// and their signatures, then the blobs it stored unless something else
// references them.
func (j *job) rollback() {
	ctx := context.Background()
	repo := j.op.Repository
	for _, d := range j.referrer {
		if err := j.s.reg.DeleteArtifact(ctx, repo, d); err != nil {
			j.s.log.Warn("remove streaming manifest of a canceled conversion", "digest", d, "err", err)
		}
	}
	for _, d := range j.blobs {
		if err := j.s.reg.UnlinkUnreferenced(ctx, repo, d); err != nil {
			j.s.log.Warn("remove a blob of a canceled conversion", "digest", d, "err", err)
		}
	}
}

// resultJSON is an operation's result: the streaming artifacts it made.
func resultJSON(descs []ocispec.Descriptor) string {
	sort.Slice(descs, func(a, b int) bool { return descs[a].Digest < descs[b].Digest })
	b, _ := json.Marshal(struct {
		Referrers []ocispec.Descriptor `json:"referrers"`
	}{descs})
	return string(b)
}
