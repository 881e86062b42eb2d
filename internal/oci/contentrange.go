package oci

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrRangeInvalid is returned for a Content-Range header that is not a byte
// range the upload protocol understands.
var ErrRangeInvalid = errors.New("invalid content range")

// ParseContentRange reads the Content-Range header of a chunked upload PATCH:
// "<start>-<end>" with both ends inclusive, optionally in the RFC 9110 form
// "bytes <start>-<end>/<total>" some clients send. It returns the first
// offset and the number of bytes the chunk claims.
func ParseContentRange(s string) (start, length int64, err error) {
	v := strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(v, "bytes"); ok {
		v = strings.TrimLeft(rest, " =")
		if i := strings.IndexByte(v, '/'); i >= 0 {
			v = v[:i]
		}
	}
	a, b, ok := strings.Cut(v, "-")
	if !ok {
		return 0, 0, fmt.Errorf("%w %q: want <start>-<end>", ErrRangeInvalid, s)
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, fmt.Errorf("%w %q: want <start>-<end> with 0 <= start <= end", ErrRangeInvalid, s)
	}
	return start, end - start + 1, nil
}
