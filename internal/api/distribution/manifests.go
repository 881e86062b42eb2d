package distribution

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/api/wire"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
)

func (h *Handler) getManifest(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ref, err := oci.ParseReference(p[pRef])
	if err != nil {
		return err
	}
	m, err := h.reg.GetManifest(r.Context(), p[pName], ref, r.Method == http.MethodGet)
	if err != nil {
		return err
	}
	// A tag may be answered only in a form the client says it reads; a
	// digest names exact bytes, so there is nothing to negotiate.
	if !ref.IsDigest() && !accepts(r.Header.Values("Accept"), m.MediaType) {
		return fmt.Errorf("%w: manifest %s is %s, which the request's Accept header does not include", registry.ErrManifestUnknown, ref, m.MediaType)
	}
	hdr := w.Header()
	hdr.Set("Content-Type", m.MediaType)
	hdr.Set("Content-Length", strconv.FormatInt(m.Size, 10))
	hdr.Set("Docker-Content-Digest", m.Digest.String())
	hdr.Set("ETag", `"`+m.Digest.String()+`"`)
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, m.Digest.String()) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(m.Payload)
	}
	return nil
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

func (h *Handler) putManifest(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ref, err := oci.ParseReference(p[pRef])
	if err != nil {
		return err
	}
	if r.ContentLength > oci.MaxManifestSize {
		return fmt.Errorf("%w: Content-Length %d, at most %d accepted", oci.ErrManifestTooLarge, r.ContentLength, oci.MaxManifestSize)
	}
	payload, err := io.ReadAll(io.LimitReader(r.Body, oci.MaxManifestSize+1))
	if err != nil {
		return fmt.Errorf("%w: reading body: %v", oci.ErrManifestInvalid, err)
	}
	extraTags := r.URL.Query()["tag"]
	ctx := r.Context()
	caller := auth.CallerFrom(ctx)
	if caller.Can(p[pName], auth.ActionStreamingWrite) {
		ctx = registry.AllowStreamingWrites(ctx)
	}
	res, err := h.reg.PutManifest(ctx, p[pName], ref, r.Header.Get("Content-Type"), payload, extraTags)
	if errors.Is(err, registry.ErrStreamingWriteDenied) {
		return &auth.DeniedError{Caller: caller, Missing: []auth.Access{auth.Repo(p[pName], auth.ActionStreamingWrite)},
			Scope: []auth.Access{auth.Repo(p[pName], auth.ActionPull, auth.ActionPush, auth.ActionStreamingWrite)}}
	}
	if err != nil {
		return err
	}
	hdr := w.Header()
	hdr.Set("Location", "/v2/"+p[pName]+"/manifests/"+res.Digest.String())
	hdr.Set("Docker-Content-Digest", res.Digest.String())
	if res.Subject != "" {
		hdr.Set("OCI-Subject", res.Subject.String())
	}
	for _, t := range extraTags {
		hdr.Add("OCI-Tag", t)
	}
	hdr.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (h *Handler) deleteManifest(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ref, err := oci.ParseReference(p[pRef])
	if err != nil {
		return err
	}
	if err := h.reg.DeleteManifest(r.Context(), p[pName], ref); err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// Page sizes of the listing endpoints.
const (
	defaultCatalogPage = 1000
	maxPage            = 10000
)

func (h *Handler) tags(w http.ResponseWriter, r *http.Request, p route.Params) error {
	return wire.Names(w, r, "/v2/"+p[pName]+"/tags/list", "tags", -1, maxPage, map[string]any{"name": p[pName]}, func(last string, n int) ([]string, bool, error) {
		return h.reg.Tags(r.Context(), p[pName], last, n)
	})
}

func (h *Handler) catalog(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	mayRead := auth.CallerFrom(r.Context()).MayRead
	return wire.Names(w, r, "/v2/_catalog", "repositories", defaultCatalogPage, maxPage, nil, func(last string, n int) ([]string, bool, error) {
		return h.reg.ReadableRepositories(r.Context(), last, n, mayRead)
	})
}

func (h *Handler) referrers(w http.ResponseWriter, r *http.Request, p route.Params) error {
	dgst, err := oci.ParseDigest(p[pDigest])
	if err != nil {
		return err
	}
	artifactType := r.URL.Query().Get("artifactType")
	descs, err := h.reg.Referrers(r.Context(), p[pName], dgst, artifactType)
	if err != nil {
		return err
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	wire.JSON(w, http.StatusOK, ocispec.MediaTypeImageIndex, ocispec.Index{
		Versioned: specsVersion2,
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: descs,
	})
	return nil
}

var specsVersion2 = specs.Versioned{SchemaVersion: 2}
