package dist

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
)

func (h *Handler) getManifest(w http.ResponseWriter, r *http.Request, rt route) {
	ref, err := oci.ParseReference(rt.arg)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	m, err := h.reg.GetManifest(r.Context(), rt.name, ref, r.Method == http.MethodGet)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	// A tag may be answered only in a form the client says it reads; a
	// digest names exact bytes, so there is nothing to negotiate.
	if !ref.IsDigest() && !accepts(r.Header.Values("Accept"), m.MediaType) {
		writeErrorBody(w, http.StatusNotFound, "MANIFEST_UNKNOWN",
			fmt.Sprintf("manifest %s is %s, which the request's Accept header does not include", ref, m.MediaType))
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", m.MediaType)
	hdr.Set("Content-Length", strconv.FormatInt(m.Size, 10))
	hdr.Set("Docker-Content-Digest", m.Digest.String())
	hdr.Set("ETag", `"`+m.Digest.String()+`"`)
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, m.Digest.String()) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(m.Payload)
	}
}

// accepts reports whether Accept headers admit mediaType. No Accept header,
// or a wildcard, admits anything.
func accepts(values []string, mediaType string) bool {
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			if mt == mediaType || mt == "*/*" || mt == "application/*" {
				return true
			}
		}
	}
	return false
}

func (h *Handler) putManifest(w http.ResponseWriter, r *http.Request, rt route) {
	ref, err := oci.ParseReference(rt.arg)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	if r.ContentLength > oci.MaxManifestSize {
		writeError(w, r, h.log, fmt.Errorf("%w: Content-Length %d, at most %d accepted", oci.ErrManifestTooLarge, r.ContentLength, oci.MaxManifestSize))
		return
	}
	payload, err := io.ReadAll(io.LimitReader(r.Body, oci.MaxManifestSize+1))
	if err != nil {
		writeError(w, r, h.log, fmt.Errorf("%w: reading body: %v", oci.ErrManifestInvalid, err))
		return
	}
	extraTags := r.URL.Query()["tag"]
	ctx := r.Context()
	caller := auth.CallerFrom(ctx)
	if caller.Can(rt.name, auth.ActionStreamingWrite) {
		ctx = registry.AllowStreamingWrites(ctx)
	}
	res, err := h.reg.PutManifest(ctx, rt.name, ref, r.Header.Get("Content-Type"), payload, extraTags)
	if errors.Is(err, registry.ErrStreamingWriteDenied) && caller.Claims != nil && caller.Challenge != nil {
		// A bearer token is short of streaming_write: its client may ask
		// for a token that has it, which its identity may hold.
		w.Header().Set("WWW-Authenticate", caller.Challenge(auth.Repo(rt.name, auth.ActionPull, auth.ActionPush, auth.ActionStreamingWrite)))
		writeErrorBody(w, http.StatusUnauthorized, "UNAUTHORIZED", err.Error())
		return
	}
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	hdr := w.Header()
	hdr.Set("Location", "/v2/"+rt.name+"/manifests/"+res.Digest.String())
	hdr.Set("Docker-Content-Digest", res.Digest.String())
	if res.Subject != "" {
		hdr.Set("OCI-Subject", res.Subject.String())
	}
	for _, t := range extraTags {
		hdr.Add("OCI-Tag", t)
	}
	hdr.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

func (h *Handler) deleteManifest(w http.ResponseWriter, r *http.Request, rt route) {
	ref, err := oci.ParseReference(rt.arg)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	if err := h.reg.DeleteManifest(r.Context(), rt.name, ref); err != nil {
		writeError(w, r, h.log, err)
		return
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}

// Page sizes of the listing endpoints.
const (
	defaultCatalogPage = 1000
	maxPage            = 10000
)

// pageOf reads the n and last parameters of a listing; n is def when absent.
func pageOf(q url.Values, def int) (n int, last string, err error) {
	n = def
	if v := q.Get("n"); v != "" {
		n, err = strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, "", fmt.Errorf("%w: n=%q must be a non-negative integer", errPaginationInvalid, v)
		}
		if n > maxPage {
			n = maxPage
		}
	}
	return n, q.Get("last"), nil
}

// setNextLink points the client at the next page, as the spec's Link header.
func setNextLink(w http.ResponseWriter, path string, n int, last string) {
	q := url.Values{"n": {strconv.Itoa(n)}, "last": {last}}
	w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, q.Encode()))
}

func (h *Handler) tags(w http.ResponseWriter, r *http.Request, rt route) {
	n, last, err := pageOf(r.URL.Query(), -1)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	tags, more, err := h.reg.Tags(r.Context(), rt.name, last, n)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	if more && len(tags) > 0 {
		setNextLink(w, "/v2/"+rt.name+"/tags/list", n, tags[len(tags)-1])
	}
	writeJSON(w, http.StatusOK, "application/json", struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{rt.name, tags})
}

func (h *Handler) catalog(w http.ResponseWriter, r *http.Request, _ route) {
	n, last, err := pageOf(r.URL.Query(), defaultCatalogPage)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	repos, more, err := h.reg.ReadableRepositories(r.Context(), last, n, auth.CallerFrom(r.Context()).MayRead)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	if more && len(repos) > 0 {
		setNextLink(w, "/v2/_catalog", n, repos[len(repos)-1])
	}
	writeJSON(w, http.StatusOK, "application/json", struct {
		Repositories []string `json:"repositories"`
	}{repos})
}

func (h *Handler) referrers(w http.ResponseWriter, r *http.Request, rt route) {
	dgst, err := oci.ParseDigest(rt.arg)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	artifactType := r.URL.Query().Get("artifactType")
	descs, err := h.reg.Referrers(r.Context(), rt.name, dgst, artifactType)
	if err != nil {
		writeError(w, r, h.log, err)
		return
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	writeJSON(w, http.StatusOK, ocispec.MediaTypeImageIndex, ocispec.Index{
		Versioned: specsVersion2,
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: descs,
	})
}

var specsVersion2 = specs.Versioned{SchemaVersion: 2}
