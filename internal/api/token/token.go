// Package token serves the Docker registry token protocol under /oauth2/
// and the gate every other request passes: it identifies the caller (a
// bearer token, basic credentials, or nobody), checks what the request
// needs, and answers 401 with a Bearer challenge pointing here when it is
// short.
package token

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/api/wire"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/metadata"
)

// Options configure the token endpoints and the gate.
type Options struct {
	// Service is the token audience and the challenge's service; empty
	// means the host the client reached.
	Service string
}

// Handler serves /oauth2/token and /oauth2/exchange.
type Handler struct {
	auth *auth.Service
	opts Options
	log  *slog.Logger
}

// New returns the token endpoints.
func New(a *auth.Service, opts Options, log *slog.Logger) *Handler {
	return &Handler{auth: a, opts: opts, log: log}
}

// service is the audience of tokens for a request.
func (o Options) service(r *http.Request) string {
	if o.Service != "" {
		return o.Service
	}
	return r.Host
}

// source is the address failed logins are limited by.
func source(r *http.Request) string { return wire.Source(r) }

type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
	TokenType    string `json:"token_type"`
}

// API is the token service's route table; every route is public (the
// endpoints authenticate the credentials they are given themselves).
func (h *Handler) API() *route.API {
	adapt := func(fn func(http.ResponseWriter, *http.Request)) route.Handler {
		return func(w http.ResponseWriter, r *http.Request, _ route.Params) error {
			fn(w, r)
			return nil
		}
	}
	return (&route.API{
		Prefix: "/oauth2",
		Routes: []route.Route{
			{Method: "GET", Pattern: "/oauth2/token", Name: "oauth2_token", Handle: adapt(h.getToken)},
			{Method: "POST", Pattern: "/oauth2/token", Name: "oauth2_token",
				Handle: adapt(func(w http.ResponseWriter, r *http.Request) { h.postToken(w, r, false) })},
			{Method: "POST", Pattern: "/oauth2/exchange", Name: "oauth2_exchange",
				Handle: adapt(func(w http.ResponseWriter, r *http.Request) { h.postToken(w, r, true) })},
		},
		Error:        writeRouteError,
		NotFoundName: "oauth2_unknown",
	}).Compile()
}

// writeRouteError answers a path or method the table does not know, in
// OAuth2's error shape.
func writeRouteError(w http.ResponseWriter, r *http.Request, err error) {
	var me *route.MethodError
	if errors.As(err, &me) {
		w.Header().Set("Allow", strings.Join(me.Allow, ", "))
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "use "+strings.Join(me.Allow, " or "))
		return
	}
	oauthError(w, http.StatusNotFound, "invalid_request", "no such endpoint")
}

// getToken is the Docker token protocol: basic credentials (or none, for an
// anonymous token) and repeated scope parameters.
func (h *Handler) getToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !h.checkService(w, r, q.Get("service")) {
		return
	}
	id := h.auth.Anonymous()
	if user, pass, ok := r.BasicAuth(); ok {
		var err error
		if id, err = h.auth.Login(r.Context(), source(r), user, pass); err != nil {
			h.loginFailed(w, r, err)
			return
		}
	}
	scopes, err := auth.ParseScopes(q["scope"])
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_scope", err.Error())
		return
	}
	offline := q.Get("offline_token") == "true"
	h.issue(w, r, id, scopes, offline, false)
}

// postToken is the OAuth2 form: grant_type password or refresh_token. The
// exchange endpoint answers only a refresh token.
func (h *Handler) postToken(w http.ResponseWriter, r *http.Request, exchange bool) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "form: "+err.Error())
		return
	}
	f := r.PostForm
	if !h.checkService(w, r, f.Get("service")) {
		return
	}
	var id *auth.Identity
	var err error
	switch f.Get("grant_type") {
	case "password":
		id, err = h.auth.Login(r.Context(), source(r), f.Get("username"), f.Get("password"))
		if err != nil {
			h.loginFailed(w, r, err)
			return
		}
	case "refresh_token":
		id, err = h.auth.Refresh(r.Context(), f.Get("refresh_token"), h.opts.service(r))
		if err != nil {
			h.log.Warn("refresh refused", "source", source(r), "err", err)
			oauthError(w, http.StatusUnauthorized, "invalid_grant", "the refresh token is invalid, expired, or its credential was revoked; log in again")
			return
		}
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be password or refresh_token")
		return
	}
	scopes, err := auth.ParseScopes(f["scope"])
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_scope", err.Error())
		return
	}
	h.issue(w, r, id, scopes, true, exchange)
}

func (h *Handler) issue(w http.ResponseWriter, r *http.Request, id *auth.Identity, scopes []auth.Access, refresh, refreshOnly bool) {
	service := h.opts.service(r)
	resp := tokenResponse{TokenType: "Bearer", IssuedAt: time.Now().UTC().Format(time.RFC3339)}
	if refresh && id.Kind != auth.Anonymous {
		rt, err := h.auth.IssueRefresh(id, service)
		if err != nil {
			oauthError(w, http.StatusInternalServerError, "server_error", "could not sign a token")
			return
		}
		resp.RefreshToken = rt
	}
	if refreshOnly {
		if resp.RefreshToken == "" {
			oauthError(w, http.StatusUnauthorized, "invalid_grant", "credentials are required for a refresh token")
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"refresh_token": resp.RefreshToken})
		return
	}
	tok, granted, ttl, err := h.auth.IssueAccess(id, service, scopes)
	if err != nil {
		h.log.Error("sign access token", "err", err)
		oauthError(w, http.StatusInternalServerError, "server_error", "could not sign a token")
		return
	}
	resp.Token, resp.AccessToken, resp.ExpiresIn = tok, tok, int(ttl.Seconds())
	resp.Scope = auth.ScopeString(granted)
	writeJSON(w, http.StatusOK, resp)
}

// checkService refuses tokens asked for another service.
func (h *Handler) checkService(w http.ResponseWriter, r *http.Request, asked string) bool {
	if asked == "" || asked == h.opts.service(r) {
		return true
	}
	oauthError(w, http.StatusBadRequest, "invalid_request", "unknown service "+strconv.Quote(asked)+"; this registry is "+strconv.Quote(h.opts.service(r)))
	return false
}

func (h *Handler) loginFailed(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, auth.ErrTooManyAttempts) {
		w.Header().Set("Retry-After", retryAfter(err))
		oauthError(w, http.StatusTooManyRequests, "too_many_requests", err.Error())
		return
	}
	if errors.Is(err, auth.ErrBadCredentials) {
		oauthError(w, http.StatusUnauthorized, "invalid_grant", err.Error())
		return
	}
	if metadata.Unavailable(err) {
		h.log.Warn("login: the metadata database is unavailable", "err", err)
		w.Header().Set("Retry-After", "5")
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the registry cannot check credentials for now; retry later")
		return
	}
	h.log.Error("login", "err", err)
	oauthError(w, http.StatusInternalServerError, "server_error", "login failed; the registry log has the details")
}

// retryAfter is the Retry-After of a login refused for too many failures:
// the whole seconds, rounded up, until the limiter lets one through.
func retryAfter(err error) string {
	var e *auth.TooManyAttemptsError
	if !errors.As(err, &e) {
		return "1"
	}
	return strconv.Itoa(e.Seconds())
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
