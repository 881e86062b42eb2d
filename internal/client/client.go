// Package client talks to OCI registries (Sluice or any other) for the CLI
// and the node snapshotter: authenticated HTTP through oras-go's auth client
// (basic credentials or the token protocol, with tokens cached), manifests
// and blobs through oras-go repositories, and the lookups artifact
// streaming needs (streaming referrers of an image, with the referrers tag
// schema as fallback).
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// Options configure a client.
type Options struct {
	// PlainHTTP talks HTTP instead of HTTPS.
	PlainHTTP bool
	// Credential returns the credentials for a registry host; nil means
	// anonymous.
	Credential auth.CredentialFunc
	// Transport is the HTTP transport; nil means a retrying default.
	Transport http.RoundTripper
	// UserAgent names the caller in requests.
	UserAgent string
}

// Client is an authenticated client of one registry host.
type Client struct {
	Host      string
	PlainHTTP bool
	auth      *auth.Client
}

// New returns a client of host (host[:port], without scheme).
func New(host string, opts Options) *Client {
	tr := opts.Transport
	if tr == nil {
		tr = retry.NewTransport(http.DefaultTransport)
	}
	ua := opts.UserAgent
	if ua == "" {
		ua = "sluice"
	}
	a := &auth.Client{
		Client:     &http.Client{Transport: tr},
		Cache:      auth.NewCache(),
		Credential: opts.Credential,
		Header:     http.Header{"User-Agent": {ua}},
	}
	return &Client{Host: host, PlainHTTP: opts.PlainHTTP, auth: a}
}

// URL is the absolute URL of a path on the registry.
func (c *Client) URL(path string) string {
	scheme := "https"
	if c.PlainHTTP {
		scheme = "http"
	}
	return scheme + "://" + c.Host + path
}

// Repository returns an oras-go repository of the registry.
func (c *Client) Repository(name string) (*remote.Repository, error) {
	repo, err := remote.NewRepository(c.Host + "/" + name)
	if err != nil {
		return nil, fmt.Errorf("repository %s/%s: %w", c.Host, name, err)
	}
	repo.PlainHTTP = c.PlainHTTP
	repo.Client = c.auth
	return repo, nil
}

// Do sends a request through the auth client; scopes are the token scopes
// the request needs ("repository:name:pull"), so that a token service is
// asked for the right ones on the first try.
func (c *Client) Do(ctx context.Context, req *http.Request, scopes ...string) (*http.Response, error) {
	if len(scopes) > 0 {
		req = req.WithContext(auth.AppendScopesForHost(ctx, c.Host, scopes...))
	} else {
		req = req.WithContext(ctx)
	}
	return c.auth.Do(req)
}

// Error is a registry's error answer.
type Error struct {
	Status  int
	Code    string
	Message string
	// Missing, when the registry refused a permission the caller lacks,
	// lists what it lacks as token scopes ("repository:team/app:pull"):
	// the accesses of the error's detail, else the scope of a 401's
	// insufficient_scope challenge.
	Missing []string
}

func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Message, e.Status)
	}
	return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
}

// ErrorFrom reads an error answer in the OCI shape
// ({"errors":[{"code","message","detail"}]}), or describes the status. An
// answer without a body (to HEAD) takes its message from the challenge's
// error_description.
func ErrorFrom(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{Status: resp.StatusCode, Message: strings.TrimSpace(string(b))}
	var body struct {
		Errors []struct {
			Code    string          `json:"code"`
			Message string          `json:"message"`
			Detail  json.RawMessage `json:"detail"`
		} `json:"errors"`
	}
	if jsonUnmarshal(b, &body) == nil && len(body.Errors) > 0 {
		e.Code, e.Message = body.Errors[0].Code, body.Errors[0].Message
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			e.Missing = scopesOf(body.Errors[0].Detail)
		}
	}
	if scheme, params := parseChallenge(resp.Header.Get("WWW-Authenticate")); resp.StatusCode == http.StatusUnauthorized &&
		scheme == "bearer" && params["error"] == "insufficient_scope" {
		if e.Missing == nil {
			e.Missing = strings.Fields(params["scope"])
		}
		if e.Message == "" {
			e.Message = params["error_description"]
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// MissingAccess returns the token scopes a registry said the caller lacks
// when it refused a request (see Error.Missing), from this package's
// errors or oras-go's; nil when err is no such refusal.
func MissingAccess(err error) []string {
	var e *Error
	if errors.As(err, &e) {
		return e.Missing
	}
	var oe *errcode.ErrorResponse
	if errors.As(err, &oe) && (oe.StatusCode == http.StatusUnauthorized || oe.StatusCode == http.StatusForbidden) {
		for _, x := range oe.Errors {
			b, _ := json.Marshal(x.Detail)
			if s := scopesOf(b); s != nil {
				return s
			}
		}
	}
	return nil
}

// scopesOf reads an error detail that lists accesses as a token's access
// claim does ([{"type","name","actions"}]) into scopes; nil when it is
// not such a list.
func scopesOf(detail []byte) []string {
	var accesses []struct {
		Type    string   `json:"type"`
		Name    string   `json:"name"`
		Actions []string `json:"actions"`
	}
	if len(detail) == 0 || json.Unmarshal(detail, &accesses) != nil {
		return nil
	}
	var scopes []string
	for _, a := range accesses {
		if a.Type != "" && a.Name != "" && len(a.Actions) > 0 {
			scopes = append(scopes, a.Type+":"+a.Name+":"+strings.Join(a.Actions, ","))
		}
	}
	return scopes
}

// parseChallenge reads a WWW-Authenticate challenge: its scheme, lower
// case, and its parameters (quoted or not).
func parseChallenge(h string) (scheme string, params map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params = map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimLeft(rest, ", ") {
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		key = strings.ToLower(strings.TrimSpace(key))
		var value strings.Builder
		if after, ok = strings.CutPrefix(after, `"`); ok {
			i := 0
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
				}
				value.WriteByte(after[i])
			}
			rest = after[min(i+1, len(after)):]
		} else {
			v, tail, _ := strings.Cut(after, ",")
			value.WriteString(strings.TrimSpace(v))
			rest = tail
		}
		params[key] = value.String()
	}
	return strings.ToLower(scheme), params
}

// IsStatus reports whether err is a registry error with that HTTP status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// DockerCredentials returns the credentials of the docker config
// (~/.docker/config.json and its credential helpers), or anonymous ones when
// there is no such file.
func DockerCredentials() auth.CredentialFunc {
	store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
	if err != nil {
		return nil
	}
	return credentials.Credential(store)
}

// StaticCredential returns the same credentials for one host.
func StaticCredential(host, username, password string) auth.CredentialFunc {
	return auth.StaticCredential(host, auth.Credential{Username: username, Password: password})
}

// defaultTimeout bounds metadata requests (not blob transfers).
const defaultTimeout = 30 * time.Second
