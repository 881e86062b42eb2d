package registry

import "errors"

// Errors of the registry service. The HTTP edge maps each to its OCI error
// code and status; messages wrapped around them say what was wrong.
var (
	ErrNameUnknown         = errors.New("repository name not known to registry")
	ErrBlobUnknown         = errors.New("blob unknown to registry")
	ErrManifestUnknown     = errors.New("manifest unknown to registry")
	ErrManifestBlobUnknown = errors.New("manifest references a manifest or blob unknown to registry")
	ErrUploadUnknown       = errors.New("blob upload unknown to registry")
	ErrUploadInvalid       = errors.New("blob upload invalid")
	// ErrRangeInvalid means a chunk does not start where the upload ends.
	ErrRangeInvalid = errors.New("requested range not satisfiable")
	ErrSizeInvalid  = errors.New("provided length did not match content length")
	// ErrDenied means a changeable attribute (writeEnabled, readEnabled,
	// deleteEnabled) forbids the operation.
	ErrDenied = errors.New("requested access to the resource is denied")
	// ErrConflict means the request conflicts with the state of the
	// registry (a soft-deleted digest pushed again, a restore that would
	// move a tag).
	ErrConflict = errors.New("conflict with the current state")
	// ErrBusy means the operation met a concurrent garbage collection of
	// the same blob for too long; the client should retry.
	ErrBusy = errors.New("blob is being garbage collected, retry shortly")
)
