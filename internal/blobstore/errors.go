package blobstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"gocloud.dev/gcerrors"
)

// storeErr says what failed and marks the failures callers act on:
// ErrNotFound for a missing object, ErrUnavailable (with the cause) for a
// store that could not be reached or could not serve.
func storeErr(what string, err error) error {
	switch {
	case gcerrors.Code(err) == gcerrors.NotFound:
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	case unavailable(err):
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// unavailable reports whether err is the store's failure to answer: no
// connection (refused, reset, a name that does not resolve), a timeout,
// or an answer that it is throttling or failing (429, 5xx). The SDKs have
// retried these already. A cancelled request is its caller's doing, and
// the store's other refusals (access denied, a bad request) will not pass
// by waiting.
func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	// A network failure, not any error with a Timeout method: a local
	// file's syscall.Errno (ENOTDIR, EACCES) has one too, and is no
	// outage that waiting ends.
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*net.DNSError](err); ok {
		return true
	}
	// The HTTP client's failure to send the request or read the answer (a
	// connection closed under it, say).
	if _, ok := errors.AsType[*url.Error](err); ok {
		return true
	}
	if code := statusCode(err); code == 429 || code >= 500 {
		return true
	}
	return gcerrors.Code(err) == gcerrors.ResourceExhausted
}

// statusCode is the HTTP status of the store's answer that err reports,
// or 0 when err is not an answer.
func statusCode(err error) int {
	if re, ok := errors.AsType[*azcore.ResponseError](err); ok {
		return re.StatusCode
	}
	// The AWS SDK's response errors (smithy-go's and those built on it).
	if re, ok := errors.AsType[interface {
		error
		HTTPStatusCode() int
	}](err); ok {
		return re.HTTPStatusCode()
	}
	return 0
}

// NoSpace returns the system's reason (ENOSPC, EDQUOT) when err is a write
// that failed for lack of space, or nil when it is not. The cause names no
// file, so that it can be told to clients; err itself names the file, for
// the log.
func NoSpace(err error) error {
	for _, errno := range []error{syscall.ENOSPC, syscall.EDQUOT} {
		if errors.Is(err, errno) {
			return errno
		}
	}
	return nil
}
