package portal

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/api/wire"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/metadata"
)

// A sign-in is a refresh token of the token service for the portal's own
// audience, kept in an HttpOnly, SameSite=Strict cookie. Every replica can
// verify it with the shared signing keys, and it stops working as soon as
// its identity is deleted or disabled or its password regenerated, as any
// refresh token does. The CSRF token of a form is a hash of the session (or,
// before signing in, of a random cookie): a page of another site can
// neither read it nor compute it.
const (
	sessionCookie = "sluice_session"
	// preCookie is the random value the sign-in form's CSRF token comes
	// from, and the CSRF token of every form when authentication is off.
	preCookie = "sluice_csrf"
	// audience of portal sessions: a session cookie is no refresh token
	// for the registry's token service, nor the other way round.
	audience  = "sluice-portal"
	csrfField = "csrf"
)

var errNoCSRF = errors.New("the form's security token is missing or wrong; reload the page and try again")

// Caller implements route.Sessions: the identity of the request's
// session, nil without one.
func (h *Handler) Caller(r *http.Request) (*auth.Caller, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, nil
	}
	id, err := h.auth.Refresh(r.Context(), c.Value, audience)
	if err != nil {
		return nil, err
	}
	return &auth.Caller{Identity: id}, nil
}

// Refuse implements route.Sessions: a request without a valid session goes
// to the sign-in page (a page) or gets 401 (anything else); one whose
// caller may not do it gets the 403 page.
func (h *Handler) Refuse(w http.ResponseWriter, r *http.Request, caller *auth.Caller, err error) {
	if caller != nil {
		h.writeError(w, r, err)
		return
	}
	switch {
	case metadata.Unavailable(err):
		h.log.Warn("portal: the metadata database is unavailable", "err", err)
		h.writeError(w, r, &userError{status: http.StatusServiceUnavailable, msg: "The registry cannot check your sign-in for now; try again shortly."})
		return
	case err != nil && !errors.Is(err, auth.ErrTokenInvalid):
		h.writeError(w, r, err)
		return
	}
	if err != nil {
		clearCookie(w, r, sessionCookie)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.writeError(w, r, &userError{status: http.StatusUnauthorized, msg: "Your session has ended; sign in again."})
		return
	}
	q := url.Values{"next": {r.URL.RequestURI()}}
	if err != nil {
		q.Set("flash", "Your session has ended; sign in again.")
	}
	http.Redirect(w, r, "/login?"+q.Encode(), http.StatusSeeOther)
}

// checkForm wraps an action: the browser must have posted it from this
// site (Sec-Fetch-Site or Origin), with the form's CSRF token.
func (h *Handler) checkForm(next route.Handler) route.Handler {
	return func(w http.ResponseWriter, r *http.Request, p route.Params) error {
		if err := h.cop.Check(r); err != nil {
			return &userError{status: http.StatusForbidden, msg: "Cross-site form posts are refused."}
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		if err := r.ParseForm(); err != nil {
			return badRequest("The form could not be read: %v", err)
		}
		want := csrfToken(r)
		got := r.PostForm.Get(csrfField)
		if want == "" || subtle.ConstantTimeCompare([]byte(want), []byte(got)) != 1 {
			return &userError{status: http.StatusForbidden, msg: errNoCSRF.Error()}
		}
		return next(w, r, p)
	}
}

// csrfToken is the CSRF token the forms of r's session carry, "" when it
// has neither a session nor the pre-session cookie.
func csrfToken(r *http.Request) string {
	base := ""
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		base = c.Value
	} else if c, err := r.Cookie(preCookie); err == nil && c.Value != "" {
		base = c.Value
	}
	if base == "" {
		return ""
	}
	sum := sha256.Sum256([]byte("sluice portal form\x00" + base))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// csrfFor is the CSRF token for the forms of a page, setting the
// pre-session cookie it comes from when the request has no session.
func (h *Handler) csrfFor(w http.ResponseWriter, r *http.Request) string {
	if t := csrfToken(r); t != "" {
		return t
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	v := base64.RawURLEncoding.EncodeToString(b)
	setCookie(w, r, preCookie, v, 0)
	r.AddCookie(&http.Cookie{Name: preCookie, Value: v})
	return csrfToken(r)
}

func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: int(maxAge.Seconds()),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
}

func clearCookie(w http.ResponseWriter, r *http.Request, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// loginData is the sign-in page's.
type loginData struct {
	Next     string
	Username string
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	if h.auth == nil {
		return redirect(w, r, "/", "")
	}
	return h.render(w, r, "login", &page{Title: "Sign in", Data: loginData{Next: safeNext(r.URL.Query().Get("next"))}})
}

// login signs in with the admin user's or a token's credentials, under
// the same failed-login limits as the API.
func (h *Handler) login(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	if h.auth == nil {
		return redirect(w, r, "/", "")
	}
	user, pass := r.PostForm.Get("username"), r.PostForm.Get("password")
	next := safeNext(r.PostForm.Get("next"))
	id, err := h.auth.Login(r.Context(), wire.Source(r), user, pass)
	if err != nil {
		status, msg := http.StatusUnauthorized, "Wrong user name or password."
		switch {
		case errors.Is(err, auth.ErrTooManyAttempts):
			status, msg = http.StatusTooManyRequests, "Too many failed sign-ins from your address; try again later."
			var tm *auth.TooManyAttemptsError
			if errors.As(err, &tm) {
				w.Header().Set("Retry-After", strconv.Itoa(tm.Seconds()))
				msg = "Too many failed sign-ins from your address; try again in " + strconv.Itoa(tm.Seconds()) + " s."
			}
		case !errors.Is(err, auth.ErrBadCredentials):
			return err
		}
		h.log.Info("portal sign-in refused", "user", user, "source", wire.Source(r), "err", err)
		return h.renderStatus(w, r, status, "login", &page{Title: "Sign in", Error: msg, Data: loginData{Next: next, Username: user}})
	}
	if id.Kind == auth.Anonymous {
		return h.renderStatus(w, r, http.StatusUnauthorized, "login", &page{Title: "Sign in", Error: "Wrong user name or password.", Data: loginData{Next: next}})
	}
	tok, err := h.auth.IssueRefresh(id, audience)
	if err != nil {
		return err
	}
	setCookie(w, r, sessionCookie, tok, h.opts.SessionTTL)
	clearCookie(w, r, preCookie)
	h.log.Info("portal sign-in", "user", id.Name, "source", wire.Source(r))
	return redirect(w, r, next, "")
}

// logout ends the browser's session.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	clearCookie(w, r, sessionCookie)
	clearCookie(w, r, preCookie)
	return redirect(w, r, "/login", "Signed out.")
}

// safeNext keeps a return path on this site.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") || strings.HasPrefix(next, "/login") {
		return "/"
	}
	return next
}
