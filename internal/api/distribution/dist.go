// Package distribution serves the OCI Distribution API v1.1 under /v2/:
// its route table, handlers that parse requests, ask the registry service
// and answer with the spec's headers and bodies, and the one function that
// turns errors into the spec's error codes. It holds no state of its own.
package distribution

import (
	"log/slog"
	"net/http"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/api/wire"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
)

// Handler serves /v2/.
type Handler struct {
	reg *registry.Registry
	log *slog.Logger
}

// New returns the /v2/ API over a registry service.
func New(reg *registry.Registry, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	return &Handler{reg: reg, log: log}
}

// Path parameters of the routes.
const (
	pName   = "name"      // a repository
	pRef    = "reference" // a tag or a digest
	pDigest = "digest"
	pUpload = "upload" // an upload session's id
)

// API is the distribution API's route table.
func (h *Handler) API() *route.API {
	pull := route.Repo(pName, auth.ActionPull)
	push := route.Repo(pName, auth.ActionPush)
	del := route.Repo(pName, auth.ActionDelete)
	rt := func(method, pattern, name string, need route.Need, fn route.Handler) route.Route {
		return route.Route{Method: method, Pattern: pattern, Name: name, Need: need, Handle: fn}
	}
	const (
		manifest = "/v2/{name...}/manifests/{reference}"
		blob     = "/v2/{name...}/blobs/{digest}"
		upload   = "/v2/{name...}/blobs/uploads/{upload}"
	)
	return (&route.API{
		Prefix: "/v2",
		Routes: []route.Route{
			rt("GET", "/v2/", "v2_base", authenticated, h.base),
			rt("GET", "/v2", "v2_base", nil, redirectToBase),
			rt("GET", "/v2/_catalog", "v2_catalog", route.Registry(auth.Catalog), h.catalog),
			rt("GET", "/v2/{name...}/tags/list", "v2_tags", pull, h.tags),
			rt("GET", "/v2/{name...}/referrers/{digest}", "v2_referrers", pull, h.referrers),
			rt("GET", manifest, "v2_manifest", pull, h.getManifest),
			rt("PUT", manifest, "v2_manifest", push, h.putManifest),
			rt("DELETE", manifest, "v2_manifest", del, h.deleteManifest),
			// Uploads before blobs: .../blobs/uploads is not a blob.
			rt("POST", "/v2/{name...}/blobs/uploads/", "v2_uploads", uploadsNeed, h.startUpload),
			rt("POST", "/v2/{name...}/blobs/uploads", "v2_uploads", uploadsNeed, h.startUpload),
			rt("GET", upload, "v2_upload", push, h.uploadStatus),
			rt("PATCH", upload, "v2_upload", push, h.patchUpload),
			rt("PUT", upload, "v2_upload", push, h.putUpload),
			rt("DELETE", upload, "v2_upload", push, h.cancelUpload),
			rt("GET", blob, "v2_blob", pull, h.getBlob),
			rt("DELETE", blob, "v2_blob", del, h.deleteBlob),
		},
		Error:        h.writeError,
		NotFoundName: "v2_unknown",
		// The table answers NAME_INVALID for a name that is not one.
		Repository: pName,
		Headers:    map[string]string{"Docker-Distribution-API-Version": "registry/2.0"},
	}).Compile()
}

// authenticated needs credentials or a token: the base endpoint is how
// clients learn they must log in.
func authenticated(*http.Request, route.Params) auth.Requirement {
	return auth.Requirement{Authenticated: true}
}

// uploadsNeed is push, and for a cross-repository mount pull on its source
// (or, without one, the caller's identity to look through the repositories
// it may read).
func uploadsNeed(r *http.Request, p route.Params) auth.Requirement {
	req := route.Repo(pName, auth.ActionPush)(r, p)
	q := r.URL.Query()
	if q.Get("mount") == "" {
		return req
	}
	if from := q.Get("from"); from != "" && oci.ValidateName(from) == nil {
		req.Accesses = append(req.Accesses, auth.Repo(from, auth.ActionPull))
	} else {
		req.Identity = true
	}
	return req
}

func redirectToBase(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	http.Redirect(w, r, "/v2/", http.StatusMovedPermanently)
	return nil
}

func (h *Handler) base(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	wire.JSON(w, http.StatusOK, "application/json", struct{}{})
	return nil
}
