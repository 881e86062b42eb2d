package conversion

import (
	"errors"
	"fmt"
)

// Error codes of failed operations, as the managed service reports them.
const (
	CodeUnknown                = "UNKNOWN_ERROR"
	CodeResourceNotFound       = "RESOURCE_NOT_FOUND"
	CodeUnsupportedPlatform    = "UNSUPPORTED_PLATFORM"
	CodeNoSupportedPlatform    = "NO_SUPPORTED_PLATFORM_FOUND"
	CodeUnsupportedMediaType   = "UNSUPPORTED_MEDIATYPE"
	CodeUnsupportedArtifact    = "UNSUPPORTED_ARTIFACT_TYPE"
	CodeImageNotRunnable       = "IMAGE_NOT_RUNNABLE"
	CodeOperationUnknown       = "OPERATION_UNKNOWN"
	CodeTagAlreadyExists       = "TAG_ALREADY_EXISTS"
	CodeImportSourceFailed     = "IMPORT_SOURCE_FAILED"
	CodeInvalidImportRequest   = "INVALID_REQUEST"
	CodeOperationNotRetryable  = "OPERATION_NOT_RETRYABLE"
	messageUnsupportedMedia    = "Allowed: OCI manifest/index v1, Docker v2 manifest/list v2"
	messageUnsupportedArtifact = "Streaming artifacts can't be converted again"
)

// errImageDeleted ends a conversion whose image was deleted while it was
// queued or running: the operation is Canceled, as the delete would have
// made it had it come first.
var errImageDeleted = errors.New("the image was deleted")

// Error is a failure with a code the API reports: a request that can never
// succeed, as opposed to a transient error worth retrying.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// codeOf returns the code of err if it is an *Error.
func codeOf(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
