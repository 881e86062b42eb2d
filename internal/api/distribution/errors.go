package dist

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
)

// apiError is one entry of the OCI error body.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// errorMapping gives each service error its OCI code and HTTP status.
var errorMapping = []struct {
	err    error
	code   string
	status int
}{
	{oci.ErrNameInvalid, "NAME_INVALID", http.StatusBadRequest},
	{oci.ErrTagInvalid, "MANIFEST_INVALID", http.StatusBadRequest},
	{oci.ErrDigestInvalid, "DIGEST_INVALID", http.StatusBadRequest},
	{oci.ErrManifestTooLarge, "MANIFEST_INVALID", http.StatusRequestEntityTooLarge},
	{oci.ErrManifestInvalid, "MANIFEST_INVALID", http.StatusBadRequest},
	{oci.ErrRangeInvalid, "BLOB_UPLOAD_INVALID", http.StatusBadRequest},
	{registry.ErrNameUnknown, "NAME_UNKNOWN", http.StatusNotFound},
	{registry.ErrBlobUnknown, "BLOB_UNKNOWN", http.StatusNotFound},
	{registry.ErrManifestUnknown, "MANIFEST_UNKNOWN", http.StatusNotFound},
	{registry.ErrManifestBlobUnknown, "MANIFEST_BLOB_UNKNOWN", http.StatusBadRequest},
	{registry.ErrUploadUnknown, "BLOB_UPLOAD_UNKNOWN", http.StatusNotFound},
	{registry.ErrUploadInvalid, "BLOB_UPLOAD_INVALID", http.StatusBadRequest},
	{registry.ErrRangeInvalid, "BLOB_UPLOAD_INVALID", http.StatusRequestedRangeNotSatisfiable},
	{registry.ErrSizeInvalid, "SIZE_INVALID", http.StatusBadRequest},
	{registry.ErrDenied, "DENIED", http.StatusForbidden},
	{registry.ErrConflict, "DENIED", http.StatusForbidden},
	{registry.ErrBusy, "TOOMANYREQUESTS", http.StatusServiceUnavailable},
	{errUnsupported, "UNSUPPORTED", http.StatusMethodNotAllowed},
	{errPaginationInvalid, "PAGINATION_NUMBER_INVALID", http.StatusBadRequest},
}

var (
	errUnsupported       = errors.New("the operation is unsupported")
	errPaginationInvalid = errors.New("invalid number of results requested")
)

// writeError answers with the OCI error body for err. Errors the mapping
// does not know are the registry's own, mostly of its storage (a blob
// directory it may not write, a database it cannot open): logged in full
// at ERROR, answered 500 without detail, since their text names the
// server's files.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	for _, m := range errorMapping {
		if errors.Is(err, m.err) {
			writeErrorBody(w, m.status, m.code, err.Error())
			return
		}
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		return
	}
	repo := parseRoute(strings.TrimPrefix(r.URL.Path, "/v2/")).name
	log.Error("request failed", "route", RouteName(r.URL.Path), "method", r.Method, "repository", repo, "err", err)
	message := "the registry could not store the data; its log has the details"
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		message = "the registry could not read the data; its log has the details"
	}
	writeErrorBody(w, http.StatusInternalServerError, "UNKNOWN", message)
}

func writeErrorBody(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Errors []apiError `json:"errors"`
	}{[]apiError{{Code: code, Message: message}}})
}
