// Package portal is the web portal served by sluiced at /: server-rendered
// pages (html/template, assets embedded) over the same services and the
// same authorization as the management API. Its route table declares what
// each page and action needs; the server's gate checks it against the
// caller of the session cookie, so a pull-only identity is refused a write
// whether or not its page showed the button. Every form carries a CSRF
// token, and a small script of ours (no framework, nothing from a CDN)
// keeps live parts of a page current without reloading it; every page
// works without it.
package portal

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/conversion"
	"github.com/sluicehq/sluice/internal/registry"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options are the registry-wide settings the portal shows or needs.
type Options struct {
	// IncludedStorage is the storage the usage bar is measured against.
	IncludedStorage int64
	// SessionTTL is how long a sign-in lasts (the refresh tokens' lifetime).
	SessionTTL time.Duration
	// SoftDelete is how long deleted images stay restorable.
	SoftDelete time.Duration
}

// Handler serves the portal.
type Handler struct {
	reg   *registry.Registry
	conv  *conversion.Service
	auth  *auth.Service // nil when authentication is off
	opts  Options
	log   *slog.Logger
	pages map[string]*template.Template
	// static serves the embedded assets.
	static http.Handler
	// cop refuses cross-origin form posts before anything else reads them.
	cop *http.CrossOriginProtection
}

// New returns the portal; a is nil when authentication is turned off.
func New(reg *registry.Registry, conv *conversion.Service, a *auth.Service, opts Options, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 3 * time.Hour
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err)
	}
	h := &Handler{reg: reg, conv: conv, auth: a, opts: opts, log: log, static: http.FileServerFS(sub), cop: http.NewCrossOriginProtection()}
	h.pages = parsePages()
	return h
}

// Path parameters.
const (
	pRepo   = "repo"
	pDigest = "digest"
	pID     = "id"
	pToken  = "token"
	pMap    = "scopemap"
	pFile   = "file"
)

// API is the portal's route table. Its prefix is the root: the server
// lists it after the APIs with their own prefixes, which keep their paths.
func (h *Handler) API() *route.API {
	read := route.Repo(pRepo, auth.ActionMetadataRead)
	write := route.Repo(pRepo, auth.ActionMetadataWrite)
	del := route.Repo(pRepo, auth.ActionDelete)
	push := route.Repo(pRepo, auth.ActionPush)
	admin := route.Registry(auth.Admin)
	catalog := route.Registry(auth.Catalog)
	rt := func(method, pattern, name string, need route.Need, fn route.Handler) route.Route {
		if method == http.MethodPost {
			fn = h.checkForm(fn)
		}
		return route.Route{Method: method, Pattern: pattern, Name: "portal_" + name, Need: need, Handle: fn}
	}
	const (
		repo  = "/repositories/{repo...}"
		image = repo + "/_images/{digest}"
		op    = repo + "/_operations/{id}"
		token = "/access/tokens/{token}"
	)
	api := &route.API{
		Prefix: "",
		Routes: []route.Route{
			rt("GET", "/", "overview", route.Authenticated, h.overview),
			rt("GET", "/static/{file}", "static", nil, h.serveStatic),
			rt("GET", "/login", "login", nil, h.loginPage),
			rt("POST", "/login", "login", nil, h.login),
			rt("POST", "/logout", "logout", nil, h.logout),
			rt("GET", "/repositories", "repositories", catalog, h.repositories),
			rt("GET", repo, "repository", read, h.repository),
			rt("POST", repo+"/_streaming", "repository_streaming", write, h.setStreaming),
			rt("POST", repo+"/_attributes", "repository_attributes", write, h.setAttributes),
			rt("GET", image, "image", read, h.image),
			rt("POST", image+"/_convert", "image_convert", write, h.convert),
			rt("POST", image+"/_profiles/{id}/_forget", "image_profile", del, h.forgetProfile),
			rt("POST", op+"/_cancel", "operation_cancel", write, h.cancelOperation),
			rt("POST", op+"/_retry", "operation_retry", write, h.retryOperation),
			rt("GET", "/operations", "operations", catalog, h.operations),
			rt("GET", "/deleted", "deleted", catalog, h.deleted),
			rt("POST", repo+"/_deleted/{digest}/_restore", "deleted_restore", push, h.restore),
			rt("GET", "/access", "access", admin, h.access),
			rt("POST", "/access/tokens", "access_tokens", admin, h.createToken),
			rt("POST", token+"/_credentials", "access_tokens", admin, h.regenerate),
			rt("POST", token+"/_enabled", "access_tokens", admin, h.setTokenEnabled),
			rt("POST", token+"/_delete", "access_tokens", admin, h.deleteToken),
			rt("POST", "/access/scopemaps", "access_scopemaps", admin, h.createScopeMap),
			rt("POST", "/access/scopemaps/{scopemap}/_delete", "access_scopemaps", admin, h.deleteScopeMap),
		},
		Error:        h.writeError,
		NotFoundName: "portal_unknown",
		Repository:   pRepo,
		Headers: map[string]string{
			// Pages load only their own assets, and are never framed.
			"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "same-origin",
		},
	}
	if h.auth != nil {
		api.Sessions = h
	}
	return api.Compile()
}

// serveStatic serves an embedded asset. Their names never change within a
// release, so they are cached briefly rather than forever.
func (h *Handler) serveStatic(w http.ResponseWriter, r *http.Request, p route.Params) error {
	w.Header().Set("Cache-Control", "public, max-age=300")
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + p[pFile]
	h.static.ServeHTTP(w, r2)
	return nil
}

// page is what every template gets.
type page struct {
	Title string
	// Nav is the section of the navigation the page is in.
	Nav    string
	Caller *auth.Caller
	// AuthOff is set when authentication is turned off.
	AuthOff bool
	CSRF    string
	// Flash is a message from the action that led here.
	Flash string
	// Error is a message about what went wrong.
	Error string
	// Live asks the script to refresh the page's live parts every so many
	// seconds (0: never).
	Live int
	Data any
}

// Admin reports whether the caller is the admin user.
func (p *page) Admin() bool { return p.Caller != nil && p.Caller.Identity.IsAdmin() }

// SignedIn reports whether the page has a caller to show the navigation
// to.
func (p *page) SignedIn() bool { return p.AuthOff || p.Caller != nil }

// Can reports whether the caller may do action on repo, to show only the
// buttons it may use (the gate refuses the others anyway).
func (p *page) Can(repo, action string) bool { return p.Caller.Can(repo, action) }

// Who names the caller.
func (p *page) Who() string {
	if p.AuthOff || p.Caller == nil {
		return ""
	}
	return p.Caller.Identity.Name
}

// render writes a page with status 200.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, name string, p *page) error {
	return h.renderStatus(w, r, http.StatusOK, name, p)
}

func (h *Handler) renderStatus(w http.ResponseWriter, r *http.Request, status int, name string, p *page) error {
	t, ok := h.pages[name]
	if !ok {
		return fmt.Errorf("no template %q", name)
	}
	p.Caller = auth.CallerFrom(r.Context())
	p.AuthOff = h.auth == nil
	if !p.AuthOff && p.Caller == auth.Unrestricted {
		// A public page (sign-in, an error before the gate): nobody.
		p.Caller = nil
	}
	if p.CSRF == "" {
		p.CSRF = h.csrfFor(w, r)
	}
	if p.Flash == "" {
		p.Flash = r.URL.Query().Get("flash")
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

// redirect sends the browser to path (on this server) after an action,
// with a message to show there.
func redirect(w http.ResponseWriter, r *http.Request, path, flash string) error {
	if flash != "" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "flash=" + url.QueryEscape(flash)
	}
	http.Redirect(w, r, path, http.StatusSeeOther)
	return nil
}

// userError is an error whose message is for the user as it is.
type userError struct {
	status int
	msg    string
}

func (e *userError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &userError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// writeError answers a failed page or action with an error page.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := h.classify(err)
	if status >= 500 {
		h.log.Error("portal", "path", r.URL.Path, "err", err)
	}
	p := &page{Title: http.StatusText(status), Error: msg, Data: status}
	if rerr := h.renderStatus(w, r, status, "error", p); rerr != nil {
		h.log.Error("render the error page", "err", rerr)
		http.Error(w, msg, status)
	}
}

// classify maps the services' errors to a status and a message for the
// page.
func (h *Handler) classify(err error) (int, string) {
	var ue *userError
	var me *route.MethodError
	var ce *conversion.Error
	var de *auth.DeniedError
	switch {
	case errors.As(err, &ue):
		return ue.status, ue.msg
	case errors.Is(err, route.ErrNotFound):
		return http.StatusNotFound, "There is no such page."
	case errors.As(err, &me):
		return http.StatusMethodNotAllowed, me.Error()
	case errors.As(err, &de):
		return http.StatusForbidden, "You may not do this: " + de.Error()
	case errors.As(err, &ce):
		switch ce.Code {
		case conversion.CodeOperationUnknown, conversion.CodeResourceNotFound:
			return http.StatusNotFound, ce.Message
		case conversion.CodeOperationNotRetryable:
			return http.StatusConflict, ce.Message
		}
		return http.StatusBadRequest, ce.Code + ": " + ce.Message
	case errors.Is(err, registry.ErrNameUnknown), errors.Is(err, registry.ErrManifestUnknown),
		errors.Is(err, registry.ErrBlobUnknown), errors.Is(err, registry.ErrProfileUnknown), errors.Is(err, auth.ErrNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, registry.ErrDenied), errors.Is(err, auth.ErrBuiltin):
		return http.StatusForbidden, err.Error()
	case errors.Is(err, registry.ErrConflict), errors.Is(err, auth.ErrExists), errors.Is(err, auth.ErrInUse):
		return http.StatusConflict, err.Error()
	case errors.Is(err, auth.ErrNameInvalid), errors.Is(err, auth.ErrActionInvalid), errors.Is(err, auth.ErrExpiryInvalid):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, context.Canceled):
		return 499, "The request was canceled."
	}
	return http.StatusInternalServerError, "Something went wrong; the registry's log has the details."
}
