// Package wire writes what the HTTP APIs of sluiced share on the wire:
// JSON answers, the OCI error body (which the management API uses too),
// and the n/last pagination of listings with its Link header.
package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
)

// JSON answers v as JSON with the given status and content type
// ("application/json" when empty).
func JSON(w http.ResponseWriter, status int, contentType string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if contentType == "" {
		contentType = "application/json"
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Error is one entry of the OCI error body.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// Errors answers the OCI error body {"errors":[...]} with one error.
func Errors(w http.ResponseWriter, status int, code, message string, detail any) {
	w.Header().Del("Content-Length")
	JSON(w, status, "application/json", struct {
		Errors []Error `json:"errors"`
	}{[]Error{{Code: code, Message: message, Detail: detail}}})
}

// ErrPageInvalid is returned for an n that is not a count.
var ErrPageInvalid = errors.New("invalid number of results requested")

// Page reads the n and last parameters of a listing: n is def when absent
// (negative: all) and at most max.
func Page(q url.Values, def, max int) (n int, last string, err error) {
	n = def
	if v := q.Get("n"); v != "" {
		n, err = strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, "", fmt.Errorf("%w: n=%q must be a non-negative integer", ErrPageInvalid, v)
		}
		n = min(n, max)
	}
	return n, q.Get("last"), nil
}

// NextLink points the client at the next page, as the distribution spec's
// Link header does.
func NextLink(w http.ResponseWriter, path string, n int, last string) {
	NextLinkQuery(w, path, nil, n, last)
}

// NextLinkQuery is NextLink for a listing whose filters (q) the next page
// keeps.
func NextLinkQuery(w http.ResponseWriter, path string, q url.Values, n int, last string) {
	next := url.Values{"n": {strconv.Itoa(n)}, "last": {last}}
	for k, v := range q {
		next[k] = v
	}
	w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, next.Encode()))
}

// Names answers a page of names as {key: [...]} (with the fields of
// extra), read with list from the request's n and last, n being def when
// absent and at most max, and the Link to the next page when there is one.
func Names(w http.ResponseWriter, r *http.Request, path, key string, def, max int, extra map[string]any,
	list func(last string, n int) ([]string, bool, error)) error {
	n, last, err := Page(r.URL.Query(), def, max)
	if err != nil {
		return err
	}
	names, more, err := list(last, n)
	if err != nil {
		return err
	}
	if names == nil {
		names = []string{}
	}
	if more && len(names) > 0 {
		NextLink(w, path, n, names[len(names)-1])
	}
	body := map[string]any{key: names}
	for k, v := range extra {
		body[k] = v
	}
	JSON(w, http.StatusOK, "application/json", body)
	return nil
}

// Code is how an API answers a service's error: its code and status.
type Code struct {
	Err    error
	Code   string
	Status int
}

// Coded answers err with the first Code of table it matches (errors.Is),
// with detail, and reports whether one did. A 429 says when to retry.
func Coded(w http.ResponseWriter, err error, table []Code, detail any) bool {
	for _, c := range table {
		if errors.Is(err, c.Err) {
			if c.Status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "1")
			}
			Errors(w, c.Status, c.Code, err.Error(), detail)
			return true
		}
	}
	return false
}

// RetryLater answers 503 UNAVAILABLE with a Retry-After of a few seconds,
// for a request that failed because a store did not answer: the client
// may send it again, and nothing of it was kept.
func RetryLater(w http.ResponseWriter, message string) {
	w.Header().Set("Retry-After", "5")
	Errors(w, http.StatusServiceUnavailable, "UNAVAILABLE", message, nil)
}

// StorageFull answers 507 INSUFFICIENT_STORAGE for a write that failed
// because the store named (metadata or blobs) is out of space, with the
// system's cause, which names no server file. Nothing of the request was
// kept; reads still work.
func StorageFull(w http.ResponseWriter, store string, cause error) {
	what := "blob storage"
	if store == "metadata" {
		what = "metadata database"
	}
	Errors(w, http.StatusInsufficientStorage, "INSUFFICIENT_STORAGE",
		fmt.Sprintf("the registry's %s is full (%v): writes are refused until its operator frees space; pulls still work", what, cause), nil)
}

// Answer is the Code answering err.
func Answer(err error, code string, status int) Code {
	return Code{Err: err, Code: code, Status: status}
}

// Source is the address a request came from, without its port: what
// failed logins are counted by and access logs name.
func Source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
