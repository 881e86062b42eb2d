// Package dist serves the OCI Distribution API v1.1 under /v2/: it parses
// requests, asks the registry service, and answers with the spec's headers,
// bodies and error codes. It holds no state of its own.
package dist

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
)

// Handler serves /v2/.
type Handler struct {
	reg    *registry.Registry
	log    *slog.Logger
	routes map[routeKey]routeHandler
}

type routeKey struct {
	kind   routeKind
	method string
}

type routeHandler func(http.ResponseWriter, *http.Request, route)

// New returns the /v2/ handler over a registry service.
func New(reg *registry.Registry, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	h := &Handler{reg: reg, log: log}
	h.routes = map[routeKey]routeHandler{
		{routeBase, "GET"}:        h.base,
		{routeBase, "HEAD"}:       h.base,
		{routeCatalog, "GET"}:     h.catalog,
		{routeTags, "GET"}:        h.tags,
		{routeManifest, "GET"}:    h.getManifest,
		{routeManifest, "HEAD"}:   h.getManifest,
		{routeManifest, "PUT"}:    h.putManifest,
		{routeManifest, "DELETE"}: h.deleteManifest,
		{routeBlob, "GET"}:        h.getBlob,
		{routeBlob, "HEAD"}:       h.getBlob,
		{routeBlob, "DELETE"}:     h.deleteBlob,
		{routeUploads, "POST"}:    h.startUpload,
		{routeUpload, "GET"}:      h.uploadStatus,
		{routeUpload, "PATCH"}:    h.patchUpload,
		{routeUpload, "PUT"}:      h.putUpload,
		{routeUpload, "DELETE"}:   h.cancelUpload,
		{routeReferrers, "GET"}:   h.referrers,
	}
	return h
}

// RouteName names the endpoint a /v2/ path reaches, for metrics labels.
func RouteName(path string) string {
	p, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		if path == "/v2" {
			return string(routeBase)
		}
		return string(routeUnknown)
	}
	return "v2_" + string(parseRoute(p).kind)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	p, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		if r.URL.Path == "/v2" {
			http.Redirect(w, r, "/v2/", http.StatusMovedPermanently)
			return
		}
		writeErrorBody(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint")
		return
	}
	rt := parseRoute(p)
	if rt.name != "" {
		if err := oci.ValidateName(rt.name); err != nil {
			writeError(w, r, h.log, err)
			return
		}
	}
	handler := h.routes[routeKey{rt.kind, r.Method}]
	if handler == nil {
		if rt.kind == routeUnknown {
			writeErrorBody(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint")
			return
		}
		writeError(w, r, h.log, errUnsupported)
		return
	}
	handler(w, r, rt)
}

func (h *Handler) base(w http.ResponseWriter, r *http.Request, _ route) {
	writeJSON(w, http.StatusOK, "application/json", struct{}{})
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
