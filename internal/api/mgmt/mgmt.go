// Package mgmt serves the management API under /acr/v1/ (repositories,
// tags, manifests and their changeable attributes, artifact streaming
// settings and operations, soft delete, usage, import) and the legacy
// Teleport endpoint under /mount/v1/. Its JSON follows the managed
// registry's shapes so that the habits and scripts of its users carry over.
package mgmt

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

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

// route is a parsed management path: the repository (if any), the action
// segment (_tags, _manifests, ...) and what follows it.
type route struct {
	repo   string
	action string
	arg    string
}

// parseRoute splits a path below /acr/v1/ at its first segment starting
// with "_": repository names never have one.
func parseRoute(p string) route {
	seg := strings.Split(strings.Trim(p, "/"), "/")
	for i, s := range seg {
		if strings.HasPrefix(s, "_") {
			return route{repo: strings.Join(seg[:i], "/"), action: s, arg: strings.Join(seg[i+1:], "/")}
		}
	}
	return route{repo: strings.Join(seg, "/")}
}

// RouteName names the endpoint a path reaches, for metrics labels.
func RouteName(path string) string {
	if strings.HasPrefix(path, "/mount/v1/") {
		return "mount"
	}
	rt := parseRoute(strings.TrimPrefix(path, "/acr/v1/"))
	switch {
	case rt.action == "":
		return "acr_repository"
	case rt.repo == "":
		return "acr" + rt.action
	}
	return "acr_repository" + rt.action
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p, ok := strings.CutPrefix(r.URL.Path, "/mount/v1/"); ok {
		h.mount(w, r, parseRoute(p))
		return
	}
	p, ok := strings.CutPrefix(r.URL.Path, "/acr/v1/")
	if !ok {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint")
		return
	}
	rt := parseRoute(p)
	if rt.repo != "" && rt.action != "_deleted" {
		if err := oci.ValidateName(rt.repo); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	switch {
	case rt.repo == "" && rt.action == "_catalog":
		h.only(w, r, "GET", h.catalog, rt)
	case rt.repo == "" && rt.action == "_usage":
		h.only(w, r, "GET", h.usage, rt)
	case rt.repo == "" && rt.action == "_keys":
		h.only(w, r, "GET", h.keys, rt)
	case rt.repo == "" && rt.action == "_import":
		h.only(w, r, "POST", h.startImport, rt)
	case rt.repo == "" && rt.action == "_operations":
		h.operation(w, r, rt)
	case rt.repo == "" && rt.action == "_deleted":
		h.deleted(w, r, rt)
	case rt.repo == "" && rt.action == "_tokens":
		h.tokens(w, r, rt)
	case rt.repo == "" && rt.action == "_scopemaps":
		h.scopeMaps(w, r, rt)
	case rt.repo == "":
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint")
	case rt.action == "":
		h.repository(w, r, rt)
	case rt.action == "_tags":
		h.tags(w, r, rt)
	case rt.action == "_manifests":
		h.manifests(w, r, rt)
	case rt.action == "_streaming":
		h.streaming(w, r, rt)
	case rt.action == "_operations":
		h.operation(w, r, rt)
	case rt.action == "_profiles":
		h.profiles(w, r, rt)
	default:
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint")
	}
}

type handlerFunc func(http.ResponseWriter, *http.Request, route)

// only runs fn for the one method the endpoint accepts.
func (h *Handler) only(w http.ResponseWriter, r *http.Request, method string, fn handlerFunc, rt route) {
	if r.Method != method {
		methodNotAllowed(w, method)
		return
	}
	fn(w, r, rt)
}

func methodNotAllowed(w http.ResponseWriter, allowed ...string) {
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	writeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "method not allowed; use "+strings.Join(allowed, " or "))
}

// registryName is the registry's name as the client reached it.
func registryName(r *http.Request) string { return r.Host }

// errorStatus maps the services' errors (auth's identities, the
// registry's) to the management API's codes.
var errorStatus = []struct {
	err    error
	code   string
	status int
}{
	{auth.ErrNameInvalid, "NAME_INVALID", http.StatusBadRequest},
	{auth.ErrActionInvalid, "INVALID_REQUEST", http.StatusBadRequest},
	{auth.ErrNotFound, "NOT_FOUND", http.StatusNotFound},
	{auth.ErrExists, "ALREADY_EXISTS", http.StatusConflict},
	{auth.ErrInUse, "IN_USE", http.StatusConflict},
	{auth.ErrBuiltin, "DENIED", http.StatusForbidden},
	{oci.ErrNameInvalid, "NAME_INVALID", http.StatusBadRequest},
	{oci.ErrTagInvalid, "TAG_INVALID", http.StatusBadRequest},
	{oci.ErrDigestInvalid, "DIGEST_INVALID", http.StatusBadRequest},
	{registry.ErrNameUnknown, "NAME_UNKNOWN", http.StatusNotFound},
	{registry.ErrManifestUnknown, "MANIFEST_UNKNOWN", http.StatusNotFound},
	{registry.ErrBlobUnknown, "BLOB_UNKNOWN", http.StatusNotFound},
	{registry.ErrDenied, "DENIED", http.StatusForbidden},
	{registry.ErrConflict, "CONFLICT", http.StatusConflict},
	{registry.ErrProfileUnknown, "PROFILE_UNKNOWN", http.StatusNotFound},
	{registry.ErrProfileInvalid, "INVALID_REQUEST", http.StatusBadRequest},
	{registry.ErrBusy, "BUSY", http.StatusServiceUnavailable},
	{errBadRequest, "INVALID_REQUEST", http.StatusBadRequest},
}

var errBadRequest = errors.New("invalid request")

// conversionStatus gives the coded errors of the conversion service their
// HTTP status.
var conversionStatus = map[string]int{
	conversion.CodeResourceNotFound:     http.StatusNotFound,
	conversion.CodeOperationUnknown:     http.StatusNotFound,
	conversion.CodeTagAlreadyExists:     http.StatusConflict,
	conversion.CodeUnsupportedArtifact:  http.StatusBadRequest,
	conversion.CodeUnsupportedMediaType: http.StatusBadRequest,
	conversion.CodeInvalidImportRequest: http.StatusBadRequest,
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ce *conversion.Error
	if errors.As(err, &ce) {
		status, ok := conversionStatus[ce.Code]
		if !ok {
			status = http.StatusBadRequest
		}
		writeError(w, status, ce.Code, ce.Message)
		return
	}
	for _, m := range errorStatus {
		if errors.Is(err, m.err) {
			writeError(w, m.status, m.code, err.Error())
			return
		}
	}
	if r.Context().Err() != nil {
		return
	}
	h.log.Error("management request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "UNKNOWN_ERROR", "internal error; the registry log has the details")
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]any{"errors": []map[string]string{{"code": code, "message": message}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
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

// pageOf reads the n and last query parameters (n defaults to 100).
func pageOf(q url.Values) (int, string, error) {
	n := 100
	if v := q.Get("n"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, "", fmt.Errorf("%w: n=%q must be a non-negative integer", errBadRequest, v)
		}
		n = min(n, 1000)
	}
	return n, q.Get("last"), nil
}

func setNextLink(w http.ResponseWriter, path string, n int, last string) {
	q := url.Values{"n": {strconv.Itoa(n)}, "last": {last}}
	w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, q.Encode()))
}

// timestamp formats times as the managed service does (RFC 3339, UTC).
func timestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
