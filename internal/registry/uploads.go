package registry

import (
	"context"
	"crypto/rand"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/blobstore"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
)

// Upload is the state of an upload session a client can see.
type Upload struct {
	ID         string
	Repository string
	// Size is how many bytes have been received.
	Size int64
}

// StartUpload opens an upload session in repo whose bytes are hashed with
// algorithm as they arrive (sha256 unless the client asked otherwise).
func (r *Registry) StartUpload(ctx context.Context, repo string, algorithm digest.Algorithm) (*Upload, error) {
	return r.startUpload(ctx, repo, algorithm, "")
}

// StartOwnedUpload starts an upload whose id begins with owner, so that
// the owner (a conversion operation) can find and drop what an earlier,
// interrupted attempt left with DropOwnedUploads.
func (r *Registry) StartOwnedUpload(ctx context.Context, repo, owner string) (*Upload, error) {
	return r.startUpload(ctx, repo, digest.Canonical, owner+"-")
}

// DropOwnedUploads ends every upload of repo started by owner, deleting
// their parts.
func (r *Registry) DropOwnedUploads(ctx context.Context, repo, owner string) error {
	ups, err := r.meta.UploadsWithPrefix(ctx, repo, owner+"-")
	if err != nil {
		return err
	}
	for _, u := range ups {
		r.dropUpload(ctx, u)
	}
	return nil
}

func (r *Registry) startUpload(ctx context.Context, repo string, algorithm digest.Algorithm, idPrefix string) (*Upload, error) {
	if algorithm == "" {
		algorithm = digest.Canonical
	}
	if err := oci.CheckAlgorithm(algorithm); err != nil {
		return nil, err
	}
	if err := r.meta.CheckWritable(ctx, repo); err != nil {
		return nil, mapMetadataErr(err)
	}
	state, err := marshalHash(algorithm.Hash())
	if err != nil {
		return nil, err
	}
	u := &metadata.Upload{ID: idPrefix + uuid.NewString(), Repository: repo, Algorithm: string(algorithm), HashState: state}
	if err := r.meta.CreateUpload(ctx, u); err != nil {
		return nil, fmt.Errorf("start upload in %s: %w", repo, err)
	}
	return &Upload{ID: u.ID, Repository: repo}, nil
}

// UploadStatus returns how far an upload has come.
func (r *Registry) UploadStatus(ctx context.Context, repo, id string) (*Upload, error) {
	u, err := r.getUpload(ctx, repo, id)
	if err != nil {
		return nil, err
	}
	return &Upload{ID: u.ID, Repository: repo, Size: u.Size}, nil
}

func (r *Registry) getUpload(ctx context.Context, repo, id string) (*metadata.Upload, error) {
	u, err := r.meta.GetUpload(ctx, repo, id)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrUploadUnknown, id)
	}
	return u, err
}

// Chunk describes the bytes of one PATCH: where the client says they start
// (-1: wherever the upload ends) and how many it says there are (-1:
// unknown, read to the end of the body).
type Chunk struct {
	Start, Length int64
	Body          io.Reader
}

// WriteChunk appends a chunk to an upload. A chunk that does not start where
// the upload ends gets ErrRangeInvalid and the upload's current size.
func (r *Registry) WriteChunk(ctx context.Context, repo, id string, c Chunk) (*Upload, error) {
	defer r.uploadLocks.Lock(id)()
	u, err := r.getUpload(ctx, repo, id)
	if err != nil {
		return nil, err
	}
	if err := r.appendPart(ctx, u, c); err != nil {
		return &Upload{ID: id, Repository: repo, Size: u.Size}, err
	}
	return &Upload{ID: id, Repository: repo, Size: u.Size}, nil
}

// appendPart writes a chunk as the upload's next part and records it with
// the advanced hash state, updating u. An empty chunk records nothing.
func (r *Registry) appendPart(ctx context.Context, u *metadata.Upload, c Chunk) error {
	if c.Start >= 0 && c.Start != u.Size {
		return fmt.Errorf("%w: chunk starts at %d but the upload has %d bytes", ErrRangeInvalid, c.Start, u.Size)
	}
	// A long chunk keeps the upload fresh, so the purge of idle uploads
	// never takes one that is being written.
	if err := r.meta.TouchUpload(ctx, u.ID); err != nil {
		return err
	}
	h, err := unmarshalHash(digest.Algorithm(u.Algorithm), u.HashState)
	if err != nil {
		return err
	}
	body := &clientBody{r: c.Body}
	var src io.Reader = body
	if c.Length >= 0 {
		// Read one byte more than claimed to notice a body that is longer.
		src = io.LimitReader(body, c.Length+1)
	}
	key := blobstore.PartKey(u.ID, len(u.Parts), nonce())
	n, err := r.blobs.WritePart(ctx, key, io.TeeReader(src, h))
	if err != nil {
		_ = r.blobs.DeleteKey(context.WithoutCancel(ctx), key)
		return body.copyError("store a chunk of upload "+u.ID, err)
	}
	if c.Length >= 0 && n != c.Length {
		_ = r.blobs.DeleteKey(ctx, key)
		return fmt.Errorf("%w: chunk has %d bytes but Content-Length or Content-Range says %d", ErrSizeInvalid, n, c.Length)
	}
	if n == 0 {
		_ = r.blobs.DeleteKey(ctx, key)
		return nil
	}
	state, err := marshalHash(h)
	if err != nil {
		return err
	}
	part := metadata.UploadPart{Key: key, Size: n}
	if err := r.meta.AppendUploadPart(ctx, u.Repository, u.ID, u.Size, part, state); err != nil {
		_ = r.blobs.DeleteKey(ctx, key)
		if errors.Is(err, metadata.ErrUploadConflict) {
			return fmt.Errorf("%w: %v", ErrRangeInvalid, err)
		}
		if errors.Is(err, metadata.ErrNotFound) {
			return fmt.Errorf("%w: %s", ErrUploadUnknown, u.ID)
		}
		return err
	}
	u.Size += n
	u.Parts = append(u.Parts, part)
	u.HashState = state
	return nil
}

// CompleteUpload finishes an upload with an optional last chunk and
// publishes it as dgst if the bytes match. A mismatch ends the session and
// stores nothing; an out-of-order last chunk (ErrRangeInvalid) leaves the
// session as it was, and the returned Upload says where it stands.
func (r *Registry) CompleteUpload(ctx context.Context, repo, id string, dgst digest.Digest, c Chunk) (*Upload, error) {
	defer r.uploadLocks.Lock(id)()
	u, err := r.getUpload(ctx, repo, id)
	if errors.Is(err, ErrUploadUnknown) && dgst != "" {
		// The closing PUT again, from a client that lost the answer to
		// the first (the replica that completed the upload went down
		// before answering): the upload is gone because it completed,
		// and the blob it was for is in the repository. Answering that
		// is what the client asks; "upload unknown" would fail its push.
		if size, serr := r.StatBlob(ctx, repo, dgst); serr == nil {
			return &Upload{ID: id, Repository: repo, Size: size}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	status := &Upload{ID: id, Repository: repo, Size: u.Size}
	if len(u.Parts) == 0 {
		if c.Start > 0 {
			return status, fmt.Errorf("%w: chunk starts at %d but the upload is empty", ErrRangeInvalid, c.Start)
		}
		// Everything arrives in this request: stream it straight to its
		// final name, verified on the way.
		status.Size, err = r.PutBlob(ctx, repo, dgst, c.Body)
		if err == nil || errors.Is(err, oci.ErrDigestInvalid) {
			r.dropUpload(ctx, u)
		}
		return status, err
	}
	if err := r.appendPart(ctx, u, c); err != nil {
		return status, err
	}
	status.Size = u.Size
	if err := r.publishParts(ctx, u, dgst); err != nil {
		return status, err
	}
	return status, nil
}

// publishParts makes the parts of a finished upload the blob dgst, linked
// in the upload's repository, and ends the session.
func (r *Registry) publishParts(ctx context.Context, u *metadata.Upload, dgst digest.Digest) error {
	verified := false
	if digest.Algorithm(u.Algorithm) == dgst.Algorithm() {
		h, err := unmarshalHash(dgst.Algorithm(), u.HashState)
		if err != nil {
			return err
		}
		if got := digest.NewDigest(dgst.Algorithm(), h); got != dgst {
			r.dropUpload(ctx, u)
			return fmt.Errorf("%w: uploaded content is %s, not %s", oci.ErrDigestInvalid, got, dgst)
		}
		verified = true
	}
	if err := r.touchBlob(ctx, dgst); err != nil {
		return err
	}
	exists, err := r.blobs.Exists(ctx, dgst)
	if err != nil {
		return err
	}
	if !exists || !verified {
		// Either the object must be written, or the parts were hashed with
		// another algorithm and must be checked while copying.
		keys := make([]string, len(u.Parts))
		for i, p := range u.Parts {
			keys[i] = p.Key
		}
		if err := r.blobs.Assemble(ctx, dgst, keys, verified); err != nil {
			if errors.Is(err, blobstore.ErrDigestMismatch) {
				r.dropUpload(ctx, u)
				return fmt.Errorf("%w: %v", oci.ErrDigestInvalid, err)
			}
			return err
		}
	}
	if err := r.link(ctx, u.Repository, dgst, u.Size); err != nil {
		return err
	}
	r.dropUpload(ctx, u)
	return nil
}

// CancelUpload ends an upload session and deletes what it stored.
func (r *Registry) CancelUpload(ctx context.Context, repo, id string) error {
	defer r.uploadLocks.Lock(id)()
	u, err := r.getUpload(ctx, repo, id)
	if err != nil {
		return err
	}
	r.dropUpload(ctx, u)
	return nil
}

// dropUpload forgets an upload and deletes its parts. Failures are only
// logged: the purge of stale uploads retries what is left.
func (r *Registry) dropUpload(ctx context.Context, u *metadata.Upload) {
	ctx = context.WithoutCancel(ctx)
	if err := r.meta.DeleteUpload(ctx, u.ID); err != nil {
		r.log.Warn("forget upload", "upload", u.ID, "err", err)
		return
	}
	if err := r.blobs.DeleteUpload(ctx, u.ID); err != nil {
		r.log.Warn("delete upload parts", "upload", u.ID, "err", err)
	}
}

func marshalHash(h hash.Hash) ([]byte, error) {
	m, ok := h.(encoding.BinaryMarshaler)
	if !ok {
		return nil, errors.New("hash state cannot be saved")
	}
	return m.MarshalBinary()
}

func unmarshalHash(alg digest.Algorithm, state []byte) (hash.Hash, error) {
	if err := oci.CheckAlgorithm(alg); err != nil {
		return nil, err
	}
	h := alg.Hash()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		return nil, fmt.Errorf("restore upload hash state: %w", err)
	}
	return h, nil
}

func nonce() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
