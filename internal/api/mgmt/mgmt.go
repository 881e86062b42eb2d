// Package mgmt serves the management API under /acr/v1/ (repositories,
// tags, manifests and their changeable attributes, artifact streaming
// settings and operations, soft delete, usage, import, tokens and scope
// maps) and the legacy Teleport endpoint under /mount/v1/: their route
// tables, their handlers, and the one function that turns errors into the
// management API's codes. Its JSON follows the managed registry's shapes
// so that the habits and scripts of its users carry over.
package mgmt

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/api/wire"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/conversion"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
	"github.com/sluicehq/sluice/internal/trust"
)

// Options are registry-wide settings the API reports.
type Options struct {
	// IncludedStorage is the storage limit reported by the usage API.
	IncludedStorage int64
	// Keys publishes the public keys that streaming artifacts are signed
	// with (GET /acr/v1/_keys).
	Keys PublicKeys
}

// PublicKeys gives the registry's public signing keys.
type PublicKeys interface {
	JWKS() (trust.JWKS, error)
}

// Handler serves /acr/v1/ and /mount/v1/.
type Handler struct {
	reg  *registry.Registry
	conv *conversion.Service
	auth *auth.Service // nil when authentication is off
	opts Options
	log  *slog.Logger
}

// New returns the management API handler; a is nil when authentication is
// turned off.
func New(reg *registry.Registry, conv *conversion.Service, a *auth.Service, opts Options, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	return &Handler{reg: reg, conv: conv, auth: a, opts: opts, log: log}
}

// Path parameters of the routes.
const (
	pRepo     = "repo"
	pTag      = "tag"
	pDigest   = "digest"
	pRef      = "ref" // a digest or a tag
	pID       = "id"  // an operation
	pToken    = "token"
	pScopeMap = "scopemap"
)

// APIs are the management API's route table and the legacy Teleport one.
func (h *Handler) APIs() []*route.API {
	admin := route.Registry(auth.Admin)
	read := route.Repo(pRepo, auth.ActionMetadataRead)
	write := route.Repo(pRepo, auth.ActionMetadataWrite)
	del := route.Repo(pRepo, auth.ActionDelete)
	pull := route.Repo(pRepo, auth.ActionPull)
	push := route.Repo(pRepo, auth.ActionPush)
	rt := func(method, pattern, name string, need route.Need, fn route.Handler) route.Route {
		return route.Route{Method: method, Pattern: pattern, Name: name, Need: need, Handle: fn}
	}
	const (
		repo      = "/acr/v1/{repo...}"
		tag       = repo + "/_tags/{tag}"
		manifest  = repo + "/_manifests/{ref}"
		settings  = repo + "/_streaming"
		operation = repo + "/_operations/{id}"
		profile   = repo + "/_profiles/{digest}"
		tokenPath = "/acr/v1/_tokens/{token}"
		scopeMap  = "/acr/v1/_scopemaps/{scopemap}"
	)
	acr := &route.API{
		Prefix: "/acr/v1",
		Routes: []route.Route{
			rt("GET", "/acr/v1/_catalog", "acr_catalog", route.Registry(auth.Catalog), h.catalog),
			rt("GET", "/acr/v1/_usage", "acr_usage", admin, h.usage),
			rt("GET", "/acr/v1/_keys", "acr_keys", nil, h.keys),
			// Imports check push on their targets themselves.
			rt("POST", "/acr/v1/_import", "acr_import", route.Authenticated, h.startImport),
			rt("GET", "/acr/v1/_operations", "acr_operations", operationsNeed, h.listOperations),
			rt("GET", "/acr/v1/_operations/{id}", "acr_operations", route.Authenticated, h.getOperation),
			rt("POST", "/acr/v1/_operations/{id}:cancel", "acr_operations", route.Authenticated, h.cancelOperation),
			rt("POST", "/acr/v1/_operations/{id}:retry", "acr_operations", route.Authenticated, h.retryOperation),
			rt("GET", "/acr/v1/_deleted/_catalog", "acr_deleted", admin, h.deletedRepositories),
			rt("GET", "/acr/v1/_deleted/{repo...}/_manifests", "acr_deleted", read, h.deletedManifests),
			rt("GET", "/acr/v1/_deleted/{repo...}/_tags", "acr_deleted", read, h.deletedTags),
			rt("POST", "/acr/v1/_deleted/{repo...}/_manifests/{digest}", "acr_deleted", push, h.restore),
			rt("GET", "/acr/v1/_tokens", "acr_tokens", admin, h.tokens().listAll),
			rt("POST", "/acr/v1/_tokens", "acr_tokens", admin, h.createToken),
			rt("GET", tokenPath, "acr_tokens", admin, h.tokens().show),
			rt("PATCH", tokenPath, "acr_tokens", admin, h.updateToken),
			rt("DELETE", tokenPath, "acr_tokens", admin, h.tokens().delete),
			rt("POST", tokenPath+"/_credentials", "acr_tokens", admin, h.generateCredentials),
			rt("GET", "/acr/v1/_scopemaps", "acr_scopemaps", admin, h.scopeMaps().listAll),
			rt("POST", "/acr/v1/_scopemaps", "acr_scopemaps", admin, h.createScopeMap),
			rt("GET", scopeMap, "acr_scopemaps", admin, h.scopeMaps().show),
			rt("PATCH", scopeMap, "acr_scopemaps", admin, h.updateScopeMap),
			rt("DELETE", scopeMap, "acr_scopemaps", admin, h.scopeMaps().delete),
			rt("GET", repo+"/_tags", "acr_repository_tags", read, h.tags().list),
			rt("GET", tag, "acr_repository_tags", read, h.tags().show),
			rt("PATCH", tag, "acr_repository_tags", write, h.tags().patch),
			rt("DELETE", tag, "acr_repository_tags", del, h.tags().delete),
			rt("GET", repo+"/_manifests", "acr_repository_manifests", read, h.manifests().list),
			rt("GET", manifest, "acr_repository_manifests", read, h.manifests().show),
			rt("PATCH", manifest, "acr_repository_manifests", write, h.manifests().patch),
			rt("DELETE", manifest, "acr_repository_manifests", del, h.manifests().delete),
			rt("GET", settings, "acr_repository_streaming", read, h.getStreaming),
			rt("POST", settings, "acr_repository_streaming", write, h.setStreaming),
			rt("PATCH", settings, "acr_repository_streaming", write, h.setStreaming),
			rt("PUT", settings, "acr_repository_streaming", write, h.setStreaming),
			rt("GET", settings+"/{ref}", "acr_repository_streaming", read, h.imageConversion),
			rt("POST", settings+"/{ref}", "acr_repository_streaming", write, h.startConversion),
			rt("GET", operation, "acr_repository_operations", read, h.getOperation),
			rt("POST", operation+":cancel", "acr_repository_operations", write, h.cancelOperation),
			rt("POST", operation+":retry", "acr_repository_operations", write, h.retryOperation),
			rt("GET", repo+"/_operations", "acr_repository_operations", read, h.listOperations),
			// Nodes hold pull-only tokens: reading and giving a startup
			// profile needs pull, nothing more.
			rt("GET", profile, "acr_repository_profiles", pull, h.getProfile),
			rt("PUT", profile, "acr_repository_profiles", pull, h.putProfile),
			rt("DELETE", profile, "acr_repository_profiles", del, h.deleteProfile),
			// Which indexes list a manifest: nodes pulling a platform's
			// manifest by digest, with pull-only tokens.
			rt("GET", repo+"/_indexes/{digest}", "acr_repository_indexes", pull, h.getIndexes),
			rt("GET", repo, "acr_repository", read, h.showRepository),
			rt("PATCH", repo, "acr_repository", write, h.updateRepository),
			rt("DELETE", repo, "acr_repository", del, h.deleteRepository),
		},
		Error:        h.writeError,
		NotFoundName: "acr_unknown",
		// The table answers NAME_INVALID for a name that is not one.
		Repository: pRepo,
	}
	mount := &route.API{
		Prefix: "/mount/v1",
		Routes: []route.Route{
			rt("GET", "/mount/v1/{repo...}/_manifests/{ref}", "mount", pull, h.mount),
		},
		Error:        h.writeError,
		NotFoundName: "mount_unknown",
		Repository:   pRepo,
	}
	return []*route.API{acr.Compile(), mount.Compile()}
}

// registryName is the registry's name as the client reached it.
func registryName(r *http.Request) string { return r.Host }

// errorStatus maps the services' errors (auth's identities, the
// registry's) to the management API's codes.
var errorStatus = []wire.Code{
	wire.Answer(auth.ErrNameInvalid, "NAME_INVALID", http.StatusBadRequest),
	wire.Answer(auth.ErrActionInvalid, "INVALID_REQUEST", http.StatusBadRequest),
	wire.Answer(auth.ErrExpiryInvalid, "INVALID_REQUEST", http.StatusBadRequest),
	wire.Answer(auth.ErrNotFound, "NOT_FOUND", http.StatusNotFound),
	wire.Answer(auth.ErrExists, "ALREADY_EXISTS", http.StatusConflict),
	wire.Answer(auth.ErrInUse, "IN_USE", http.StatusConflict),
	wire.Answer(auth.ErrBuiltin, "DENIED", http.StatusForbidden),
	wire.Answer(oci.ErrNameInvalid, "NAME_INVALID", http.StatusBadRequest),
	wire.Answer(oci.ErrTagInvalid, "TAG_INVALID", http.StatusBadRequest),
	wire.Answer(oci.ErrDigestInvalid, "DIGEST_INVALID", http.StatusBadRequest),
	wire.Answer(registry.ErrNameUnknown, "NAME_UNKNOWN", http.StatusNotFound),
	wire.Answer(registry.ErrManifestUnknown, "MANIFEST_UNKNOWN", http.StatusNotFound),
	wire.Answer(registry.ErrBlobUnknown, "BLOB_UNKNOWN", http.StatusNotFound),
	wire.Answer(registry.ErrDenied, "DENIED", http.StatusForbidden),
	wire.Answer(registry.ErrConflict, "CONFLICT", http.StatusConflict),
	wire.Answer(registry.ErrProfileUnknown, "PROFILE_UNKNOWN", http.StatusNotFound),
	wire.Answer(registry.ErrProfileInvalid, "INVALID_REQUEST", http.StatusBadRequest),
	wire.Answer(registry.ErrBusy, "BUSY", http.StatusTooManyRequests),
	wire.Answer(errBadRequest, "INVALID_REQUEST", http.StatusBadRequest),
	wire.Answer(wire.ErrPageInvalid, "INVALID_REQUEST", http.StatusBadRequest),
	wire.Answer(errAuthDisabled, "AUTH_DISABLED", http.StatusNotFound),
	wire.Answer(errNoKeys, "NOT_FOUND", http.StatusNotFound),
	wire.Answer(route.ErrNotFound, "NOT_FOUND", http.StatusNotFound),
}

var (
	errBadRequest   = errors.New("invalid request")
	errAuthDisabled = errors.New("authentication is turned off (auth.enabled: false); there are no tokens or scope maps")
	errNoKeys       = errors.New("this registry publishes no signing keys")
)

// conversionStatus gives the coded errors of the conversion service their
// HTTP status.
var conversionStatus = map[string]int{
	conversion.CodeResourceNotFound:      http.StatusNotFound,
	conversion.CodeOperationUnknown:      http.StatusNotFound,
	conversion.CodeTagAlreadyExists:      http.StatusConflict,
	conversion.CodeUnsupportedArtifact:   http.StatusBadRequest,
	conversion.CodeUnsupportedMediaType:  http.StatusBadRequest,
	conversion.CodeInvalidImportRequest:  http.StatusBadRequest,
	conversion.CodeOperationNotRetryable: http.StatusConflict,
}

// writeError answers err in the management API's error body: a refusal
// as the token protocol wants it, the conversion service's codes, the
// services' errors by errorStatus; anything else is the registry's own
// failure, logged and answered 500 without its text.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if wire.Refusal(w, r, err) {
		return
	}
	var ce *conversion.Error
	if errors.As(err, &ce) {
		status, ok := conversionStatus[ce.Code]
		if !ok {
			status = http.StatusBadRequest
		}
		wire.Errors(w, status, ce.Code, ce.Message, nil)
		return
	}
	if wire.Coded(w, err, errorStatus, nil) {
		return
	}
	if r.Context().Err() != nil {
		return
	}
	if store, cause := registry.NoSpace(err); cause != nil {
		h.log.Error("storage full: write refused", "store", store, "route", route.From(r.Context()).Name(), "method", r.Method, "err", err)
		wire.StorageFull(w, store, cause)
		return
	}
	if registry.Unavailable(err) {
		h.log.Warn("storage unavailable", "route", route.From(r.Context()).Name(), "method", r.Method, "err", err)
		wire.RetryLater(w, "the registry's storage is unavailable for now; retry later")
		return
	}
	h.log.Error("management request failed", "route", route.From(r.Context()).Name(), "method", r.Method, "err", err)
	wire.Errors(w, http.StatusInternalServerError, "UNKNOWN_ERROR", "internal error; the registry log has the details", nil)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	wire.JSON(w, status, "application/json; charset=utf-8", v)
	return nil
}

// readJSON decodes a small request body (up to 1 MiB) into v, refusing
// unknown fields so that a misspelt attribute is an error, not a silent
// no-op.
func readJSON(r *http.Request, v any) error { return readJSONUpTo(r, v, 1<<20) }

// readJSONUpTo is readJSON for a body of up to limit bytes.
func readJSONUpTo(r *http.Request, v any, limit int64) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("%w: body larger than %d bytes", errBadRequest, limit)
		}
		return fmt.Errorf("%w: body: %v", errBadRequest, err)
	}
	return nil
}

// pageOf reads the n and last query parameters (n defaults to 100, at
// most 1000).
func pageOf(r *http.Request) (int, string, error) { return wire.Page(r.URL.Query(), 100, 1000) }

// timestamp formats times as the managed service does (RFC 3339, UTC).
func timestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
