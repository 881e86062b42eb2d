package dist

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
)

func (h *Handler) getBlob(w http.ResponseWriter, r *http.Request, rt route) {
	dgst, err := oci.ParseDigest(rt.arg)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	hdr := w.Header()
	hdr.Set("Docker-Content-Digest", dgst.String())
	hdr.Set("ETag", `"`+dgst.String()+`"`)
	hdr.Set("Accept-Ranges", "bytes")
	hdr.Set("Content-Type", "application/octet-stream")
	if r.Method == http.MethodHead && r.Header.Get("Range") == "" {
		size, err := h.reg.StatBlob(r.Context(), rt.name, dgst)
		if err != nil {
			writeError(w, r, h.log, err)
			return
		}
		hdr.Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		return
	}
	c, err := h.reg.OpenBlob(r.Context(), rt.name, dgst)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	defer c.Close()
	// ServeContent answers Range (416 for an unsatisfiable one), If-Range
	// and If-None-Match against the ETag; a local blob is an *os.File, which
	// the server sends with sendfile.
	http.ServeContent(w, r, "", c.ModTime, c.ReadSeeker)
}

func (h *Handler) deleteBlob(w http.ResponseWriter, r *http.Request, rt route) {
	dgst, err := oci.ParseDigest(rt.arg)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	if err := h.reg.DeleteBlob(r.Context(), rt.name, dgst); err != nil {
		writeError(w, r, h.log, err)
		return
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}

// startUpload handles POST .../blobs/uploads/: a cross-repository mount, a
// single-request (monolithic) upload with ?digest=, or a new session.
func (h *Handler) startUpload(w http.ResponseWriter, r *http.Request, rt route) {
	q := r.URL.Query()
	if mount := q.Get("mount"); mount != "" {
		dgst, err := oci.ParseDigest(mount)
		if err != nil {
			writeError(w, r, h.log, err)
			return
		}
		if from := q.Get("from"); from != "" {
			_, err = h.reg.MountBlob(r.Context(), rt.name, from, dgst)
		} else {
			_, err = h.reg.MountBlobFromAny(r.Context(), rt.name, dgst, h.mayRead(r))
		}
		if err == nil {
			blobCreated(w, rt.name, dgst)
			return
		}
		if !errors.Is(err, registry.ErrBlobUnknown) {
			writeError(w, r, h.log, err)
			return
		}
		// Not mountable: fall back to an ordinary upload session.
	}
	if d := q.Get("digest"); d != "" {
		dgst, err := oci.ParseDigest(d)
		if err != nil {
			writeError(w, r, h.log, err)
			return
		}
		if _, err := h.reg.PutBlob(r.Context(), rt.name, dgst, r.Body); err != nil {
			writeError(w, r, h.log, err)
			return
		}
		blobCreated(w, rt.name, dgst)
		return
	}
	alg := digest.Algorithm(q.Get("digest-algorithm"))
	u, err := h.reg.StartUpload(r.Context(), rt.name, alg)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	uploadAccepted(w, u, http.StatusAccepted)
}

func (h *Handler) uploadStatus(w http.ResponseWriter, r *http.Request, rt route) {
	u, err := h.reg.UploadStatus(r.Context(), rt.name, rt.arg)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	uploadAccepted(w, u, http.StatusNoContent)
}

func (h *Handler) patchUpload(w http.ResponseWriter, r *http.Request, rt route) {
	c, err := chunkOf(r)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	u, err := h.reg.WriteChunk(r.Context(), rt.name, rt.arg, c)
	if err != nil {
		h.uploadError(w, r, u, err)
		return
	}
	uploadAccepted(w, u, http.StatusAccepted)
}

func (h *Handler) putUpload(w http.ResponseWriter, r *http.Request, rt route) {
	dgst, err := oci.ParseDigest(r.URL.Query().Get("digest"))
	if err != nil {
		writeError(w, r, h.log, fmt.Errorf("the digest query parameter is required to finish an upload: %w", err))
		return
	}
	c, err := chunkOf(r)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	u, err := h.reg.CompleteUpload(r.Context(), rt.name, rt.arg, dgst, c)
	if err != nil {
		h.uploadError(w, r, u, err)
		return
	}
	blobCreated(w, rt.name, dgst)
}

func (h *Handler) cancelUpload(w http.ResponseWriter, r *http.Request, rt route) {
	if err := h.reg.CancelUpload(r.Context(), rt.name, rt.arg); err != nil {
		writeError(w, r, h.log, err)
		return
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
}

// mayRead says which repositories the request's caller may pull from, for
// a mount that names no source repository.
func (h *Handler) mayRead(r *http.Request) func(repo string) bool {
	caller := auth.CallerFrom(r.Context())
	return func(repo string) bool { return caller.Can(repo, auth.ActionPull) }
}

// uploadError answers a failed chunk; an out-of-order chunk also tells the
// client where the upload stands, so it can resume.
func (h *Handler) uploadError(w http.ResponseWriter, r *http.Request, u *registry.Upload, err error) {
	if u != nil && errors.Is(err, registry.ErrRangeInvalid) {
		setUploadHeaders(w, u)
	}
	writeError(w, r, h.log, err)
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
