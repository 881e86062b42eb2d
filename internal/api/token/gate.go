package token

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/api/wire"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/metadata"
)

// Gate authenticates and authorizes every request before its handler: it
// reads what the request needs from the route the server matched.
type Gate struct {
	auth *auth.Service
	opts Options
	log  *slog.Logger
}

// NewGate returns the gate.
func NewGate(a *auth.Service, opts Options, log *slog.Logger) *Gate {
	return &Gate{auth: a, opts: opts, log: log}
}

// Wrap puts the gate in front of next.
func (g *Gate) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := route.From(r.Context())
		req := m.Requirement(r)
		if req.Public {
			next.ServeHTTP(w, r)
			return
		}
		if m.API.Sessions != nil {
			g.session(w, r, m.API.Sessions, req, next)
			return
		}
		caller, presented, err := g.identify(r)
		if err != nil {
			g.refuse(w, r, req, err)
			return
		}
		caller.Challenge = func(scope, errCode, description string) string {
			return g.challengeHeader(r, scope, errCode, description)
		}
		if !presented && (req.Authenticated || !caller.Check(req)) {
			g.challenge(w, r, req, "", "authentication required")
			return
		}
		if !caller.Check(req) {
			wire.Refusal(w, r, &auth.DeniedError{Caller: caller, Missing: auth.Shortfall(caller, req.Accesses), Scope: req.Accesses})
			return
		}
		if req.Identity && caller.Claims != nil {
			id, err := g.auth.IdentityOf(r.Context(), caller.Claims)
			if err != nil {
				g.challenge(w, r, req, "invalid_token", "the token's identity is no longer valid")
				return
			}
			caller.Identity = id
		}
		next.ServeHTTP(w, r.WithContext(auth.WithCaller(r.Context(), caller)))
	})
}

// session authorizes a request of an API that signs its users in itself
// (the portal): the caller comes from its session, and is checked against
// the route's Need like any other.
func (g *Gate) session(w http.ResponseWriter, r *http.Request, s route.Sessions, req auth.Requirement, next http.Handler) {
	caller, err := s.Caller(r)
	if err != nil || caller == nil {
		s.Refuse(w, r, nil, err)
		return
	}
	if !caller.Check(req) {
		s.Refuse(w, r, caller, &auth.DeniedError{Caller: caller, Missing: auth.Shortfall(caller, req.Accesses), Scope: req.Accesses})
		return
	}
	next.ServeHTTP(w, r.WithContext(auth.WithCaller(r.Context(), caller)))
}

// identify establishes the caller from the Authorization header; presented
// reports whether it carried credentials or a token.
func (g *Gate) identify(r *http.Request) (c *auth.Caller, presented bool, err error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return &auth.Caller{Identity: g.auth.Anonymous()}, false, nil
	}
	scheme, value, _ := strings.Cut(h, " ")
	switch strings.ToLower(scheme) {
	case "bearer":
		claims, err := g.auth.VerifyAccess(r.Context(), strings.TrimSpace(value), g.opts.service(r))
		if err != nil {
			return nil, true, err
		}
		return &auth.Caller{Identity: g.auth.Anonymous(), Claims: claims}, true, nil
	case "basic":
		user, pass, ok := r.BasicAuth()
		if !ok {
			return nil, true, fmt.Errorf("%w: malformed basic credentials", auth.ErrBadCredentials)
		}
		id, err := g.auth.Login(r.Context(), source(r), user, pass)
		if err != nil {
			return nil, true, err
		}
		return &auth.Caller{Identity: id}, true, nil
	}
	return nil, true, fmt.Errorf("%w: unsupported authorization scheme %q", auth.ErrBadCredentials, scheme)
}

func (g *Gate) refuse(w http.ResponseWriter, r *http.Request, req auth.Requirement, err error) {
	switch {
	case errors.Is(err, auth.ErrTooManyAttempts):
		w.Header().Set("Retry-After", retryAfter(err))
		wire.Errors(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", err.Error(), nil)
	case errors.Is(err, auth.ErrTokenInvalid):
		g.log.Info("bearer token refused", "source", source(r), "path", r.URL.Path, "err", err)
		g.challenge(w, r, req, "invalid_token", "the bearer token is invalid or expired")
	case errors.Is(err, auth.ErrBadCredentials):
		g.challenge(w, r, req, "", err.Error())
	case metadata.Unavailable(err):
		g.log.Warn("authenticate: the metadata database is unavailable", "err", err)
		wire.RetryLater(w, "the registry cannot check credentials for now; retry later")
	default:
		g.log.Error("authenticate", "err", err)
		wire.Errors(w, http.StatusInternalServerError, "UNKNOWN", "authentication failed; the registry log has the details", nil)
	}
}

// challenge answers 401 with the Bearer challenge of the token protocol,
// whose realm is the address the client reached.
func (g *Gate) challenge(w http.ResponseWriter, r *http.Request, req auth.Requirement, errCode, message string) {
	w.Header().Set("WWW-Authenticate", g.challengeHeader(r, auth.ScopeString(req.Accesses), errCode, ""))
	wire.Errors(w, http.StatusUnauthorized, "UNAUTHORIZED", message, nil)
}

// challengeHeader is a Bearer challenge for scope (may be empty), with an
// error code when not empty. The description is sent only in answers to
// HEAD, which have no body to carry the message: clients that read the
// challenge (containers/image, distribution's client) print its
// error_description before the body's errors, and would say it twice.
func (g *Gate) challengeHeader(r *http.Request, scope, errCode, description string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	c := fmt.Sprintf(`Bearer realm="%s://%s/oauth2/token",service="%s"`, scheme, r.Host, g.opts.service(r))
	if scope != "" {
		c += fmt.Sprintf(`,scope="%s"`, scope)
	}
	if errCode != "" {
		c += fmt.Sprintf(`,error="%s"`, errCode)
	}
	if description != "" && r.Method == http.MethodHead {
		// A quoted-string of RFC 6750 holds neither quotes nor backslashes.
		c += fmt.Sprintf(`,error_description="%s"`, strings.NewReplacer(`"`, "'", `\`, "/").Replace(description))
	}
	return c
}
