package distribution

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
)

func (h *Handler) getBlob(w http.ResponseWriter, r *http.Request, p route.Params) error {
	dgst, err := oci.ParseDigest(p[pDigest])
	if err != nil {
		return err
	}
	hdr := w.Header()
	hdr.Set("Docker-Content-Digest", dgst.String())
	hdr.Set("ETag", `"`+dgst.String()+`"`)
	hdr.Set("Accept-Ranges", "bytes")
	hdr.Set("Content-Type", "application/octet-stream")
	if r.Method == http.MethodHead && r.Header.Get("Range") == "" {
		size, err := h.reg.StatBlob(r.Context(), p[pName], dgst)
		if err != nil {
			return err
		}
		hdr.Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		return nil
	}
	if r.Method == http.MethodGet {
		// With storage.redirect, the object store serves the bytes (and
		// the ranges) to a client the registry allowed to read them.
		u, err := h.reg.BlobRedirect(r.Context(), p[pName], dgst)
		if err != nil {
			return err
		}
		if u != "" {
			hdr.Set("Location", u)
			w.WriteHeader(http.StatusTemporaryRedirect)
			return nil
		}
	}
	c, err := h.reg.OpenBlob(r.Context(), p[pName], dgst)
	if err != nil {
		return err
	}
	defer c.Close()
	// ServeContent answers Range (416 for an unsatisfiable one), If-Range
	// and If-None-Match against the ETag; a local blob is an *os.File, which
	// the server sends with sendfile.
	http.ServeContent(w, r, "", c.ModTime, c.ReadSeeker)
	return nil
}

func (h *Handler) deleteBlob(w http.ResponseWriter, r *http.Request, p route.Params) error {
	dgst, err := oci.ParseDigest(p[pDigest])
	if err != nil {
		return err
	}
	if err := h.reg.DeleteBlob(r.Context(), p[pName], dgst); err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// startUpload handles POST .../blobs/uploads/: a cross-repository mount, a
// single-request (monolithic) upload with ?digest=, or a new session.
func (h *Handler) startUpload(w http.ResponseWriter, r *http.Request, p route.Params) error {
	q := r.URL.Query()
	if mount := q.Get("mount"); mount != "" {
		dgst, err := oci.ParseDigest(mount)
		if err != nil {
			return err
		}
		if from := q.Get("from"); from != "" {
			_, err = h.reg.MountBlob(r.Context(), p[pName], from, dgst)
		} else {
			_, err = h.reg.MountBlobFromAny(r.Context(), p[pName], dgst, h.mayRead(r))
		}
		if err == nil {
			blobCreated(w, p[pName], dgst)
			return nil
		}
		if !errors.Is(err, registry.ErrBlobUnknown) {
			return err
		}
		// Not mountable: fall back to an ordinary upload session.
	}
	if d := q.Get("digest"); d != "" {
		dgst, err := oci.ParseDigest(d)
		if err != nil {
			return err
		}
		if _, err := h.reg.PutBlob(r.Context(), p[pName], dgst, r.Body); err != nil {
			return err
		}
		blobCreated(w, p[pName], dgst)
		return nil
	}
	alg := digest.Algorithm(q.Get("digest-algorithm"))
	u, err := h.reg.StartUpload(r.Context(), p[pName], alg)
	if err != nil {
		return err
	}
	uploadAccepted(w, u, http.StatusAccepted)
	return nil
}

func (h *Handler) uploadStatus(w http.ResponseWriter, r *http.Request, p route.Params) error {
	u, err := h.reg.UploadStatus(r.Context(), p[pName], p[pUpload])
	if err != nil {
		return err
	}
	uploadAccepted(w, u, http.StatusNoContent)
	return nil
}

func (h *Handler) patchUpload(w http.ResponseWriter, r *http.Request, p route.Params) error {
	c, err := chunkOf(r)
	if err != nil {
		return err
	}
	u, err := h.reg.WriteChunk(r.Context(), p[pName], p[pUpload], c)
	if err != nil {
		return uploadError(w, u, err)
	}
	uploadAccepted(w, u, http.StatusAccepted)
	return nil
}

func (h *Handler) putUpload(w http.ResponseWriter, r *http.Request, p route.Params) error {
	dgst, err := oci.ParseDigest(r.URL.Query().Get("digest"))
	if err != nil {
		return fmt.Errorf("the digest query parameter is required to finish an upload: %w", err)
	}
	c, err := chunkOf(r)
	if err != nil {
		return err
	}
	u, err := h.reg.CompleteUpload(r.Context(), p[pName], p[pUpload], dgst, c)
	if err != nil {
		return uploadError(w, u, err)
	}
	blobCreated(w, p[pName], dgst)
	return nil
}

func (h *Handler) cancelUpload(w http.ResponseWriter, r *http.Request, p route.Params) error {
	if err := h.reg.CancelUpload(r.Context(), p[pName], p[pUpload]); err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// mayRead says which repositories the request's caller may pull from, for
// a mount that names no source repository.
func (h *Handler) mayRead(r *http.Request) func(repo string) bool {
	caller := auth.CallerFrom(r.Context())
	return func(repo string) bool { return caller.Can(repo, auth.ActionPull) }
}

// uploadError is the error of a failed chunk; for an out-of-order chunk it
// first tells the client where the upload stands, so it can resume.
func uploadError(w http.ResponseWriter, u *registry.Upload, err error) error {
	if u != nil && errors.Is(err, registry.ErrRangeInvalid) {
		setUploadHeaders(w, u)
	}
	return err
}

// chunkOf reads the optional Content-Range and Content-Length of a chunk.
func chunkOf(r *http.Request) (registry.Chunk, error) {
	c := registry.Chunk{Start: -1, Length: r.ContentLength, Body: r.Body}
	if cr := r.Header.Get("Content-Range"); cr != "" {
		start, length, err := oci.ParseContentRange(cr)
		if err != nil {
			return c, err
		}
		if c.Length >= 0 && c.Length != length {
			return c, fmt.Errorf("%w: Content-Range %q covers %d bytes but Content-Length is %d", registry.ErrSizeInvalid, cr, length, c.Length)
		}
		c.Start, c.Length = start, length
	}
	return c, nil
}

func uploadLocation(u *registry.Upload) string {
	return "/v2/" + u.Repository + "/blobs/uploads/" + u.ID
}

func setUploadHeaders(w http.ResponseWriter, u *registry.Upload) {
	hdr := w.Header()
	hdr.Set("Location", uploadLocation(u))
	hdr.Set("Docker-Upload-UUID", u.ID)
	end := u.Size - 1
	if end < 0 {
		end = 0
	}
	hdr.Set("Range", "0-"+strconv.FormatInt(end, 10))
}

func uploadAccepted(w http.ResponseWriter, u *registry.Upload, status int) {
	setUploadHeaders(w, u)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(status)
}

func blobCreated(w http.ResponseWriter, repo string, dgst digest.Digest) {
	hdr := w.Header()
	hdr.Set("Location", "/v2/"+repo+"/blobs/"+dgst.String())
	hdr.Set("Docker-Content-Digest", dgst.String())
	hdr.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}
