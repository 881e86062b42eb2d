package distribution

import (
	"context"
	"errors"
	"net/http"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/api/wire"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
)

// errorMapping gives each service error its OCI code and HTTP status.
var errorMapping = []wire.Code{
	wire.Answer(oci.ErrNameInvalid, "NAME_INVALID", http.StatusBadRequest),
	wire.Answer(oci.ErrTagInvalid, "MANIFEST_INVALID", http.StatusBadRequest),
	wire.Answer(oci.ErrDigestInvalid, "DIGEST_INVALID", http.StatusBadRequest),
	wire.Answer(oci.ErrManifestTooLarge, "MANIFEST_INVALID", http.StatusRequestEntityTooLarge),
	wire.Answer(oci.ErrManifestInvalid, "MANIFEST_INVALID", http.StatusBadRequest),
	wire.Answer(oci.ErrRangeInvalid, "BLOB_UPLOAD_INVALID", http.StatusBadRequest),
	wire.Answer(registry.ErrNameUnknown, "NAME_UNKNOWN", http.StatusNotFound),
	wire.Answer(registry.ErrBlobUnknown, "BLOB_UNKNOWN", http.StatusNotFound),
	wire.Answer(registry.ErrManifestUnknown, "MANIFEST_UNKNOWN", http.StatusNotFound),
	wire.Answer(registry.ErrManifestBlobUnknown, "MANIFEST_BLOB_UNKNOWN", http.StatusBadRequest),
	wire.Answer(registry.ErrUploadUnknown, "BLOB_UPLOAD_UNKNOWN", http.StatusNotFound),
	wire.Answer(registry.ErrUploadInvalid, "BLOB_UPLOAD_INVALID", http.StatusBadRequest),
	wire.Answer(registry.ErrRangeInvalid, "BLOB_UPLOAD_INVALID", http.StatusRequestedRangeNotSatisfiable),
	wire.Answer(registry.ErrSizeInvalid, "SIZE_INVALID", http.StatusBadRequest),
	wire.Answer(registry.ErrDenied, "DENIED", http.StatusForbidden),
	wire.Answer(registry.ErrConflict, "DENIED", http.StatusForbidden),
	wire.Answer(registry.ErrBusy, "TOOMANYREQUESTS", http.StatusTooManyRequests),
	wire.Answer(wire.ErrPageInvalid, "PAGINATION_NUMBER_INVALID", http.StatusBadRequest),
	wire.Answer(route.ErrNotFound, "NOT_FOUND", http.StatusNotFound),
}

// writeError answers with the OCI error body for err, its detail the
// request's path parameters (the repository and the reference, digest or
// upload it names) or, for a refusal, the accesses the caller lacks. Errors
// the mapping does not know are the registry's own, mostly of its storage
// (a blob directory it may not write, a database it cannot open): logged
// in full at ERROR, answered 500 without detail, since their text names
// the server's files.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if wire.Refusal(w, r, err) {
		return
	}
	m := route.From(r.Context())
	var detail any
	if m != nil && len(m.Params) > 0 {
		detail = m.Params
	}
	if wire.Coded(w, err, errorMapping, detail) {
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		return
	}
	if store, cause := registry.NoSpace(err); cause != nil {
		h.log.Error("storage full: write refused", "store", store, "route", m.Name(), "method", r.Method, "repository", m.Params[pName], "err", err)
		wire.StorageFull(w, store, cause)
		return
	}
	if registry.Unavailable(err) {
		h.log.Warn("storage unavailable", "route", m.Name(), "method", r.Method, "repository", m.Params[pName], "err", err)
		wire.RetryLater(w, "the registry's storage is unavailable for now; retry later")
		return
	}
	h.log.Error("request failed", "route", m.Name(), "method", r.Method, "repository", m.Params[pName], "err", err)
	message := "the registry could not store the data; its log has the details"
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		message = "the registry could not read the data; its log has the details"
	}
	wire.Errors(w, http.StatusInternalServerError, "UNKNOWN", message, nil)
}
