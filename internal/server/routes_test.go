package server

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/auth"
)

// examples fill a route pattern's parameters with values of their kind.
var examples = map[string]string{
	"name": "team-a/app", "repo": "team-a/app",
	"reference": "v1", "ref": "v1", "tag": "v1",
	"digest": "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
	"upload": "0f0e0d0c-0b0a-0908-0706-050403020100", "id": "0f0e0d0c-0b0a-0908-0706-050403020100",
}

var param = regexp.MustCompile(`\{([a-z]+)(\.\.\.)?\}`)

// examplePath is a path the pattern matches.
func examplePath(t *testing.T, pattern string) string {
	return param.ReplaceAllStringFunc(pattern, func(m string) string {
		name := param.FindStringSubmatch(m)[1]
		v, ok := examples[name]
		if !ok {
			v = "some-" + name
		}
		return v
	})
}

// TestEveryRouteRefusesWhoLacksItsPermission walks the server's route
// tables, so that a route added later is covered without touching this
// test: every route that needs something refuses a caller without
// credentials (401 with a challenge), and every route that needs an access
// refuses a token that may do nothing on the repository it names: 403
// DENIED with basic credentials, 401 insufficient_scope with a bearer
// token. Routes that need only an identity (an import, whose handler
// checks its targets) are refused anonymously only.
func TestEveryRouteRefusesWhoLacksItsPermission(t *testing.T) {
	ar := newAuthRegistry(t, nil)
	// A token whose only right is to pull a repository no route names.
	ar.do("POST", "/acr/v1/_scopemaps", basic("admin", adminPassword), []byte(`{"name":"elsewhere","actions":["repositories/elsewhere/app/content/read"]}`))
	password := ar.createToken("nothing-here", "elsewhere")
	bearer, code := ar.bearer("nothing-here", password, "repository:team-a/app:pull,push,delete,metadata_read,metadata_write,streaming_write", "registry:catalog:*")
	if code != 200 {
		t.Fatalf("token: %d", code)
	}
	// The only routes anyone may use, and those that need only an
	// identity: a route added to these lists is a decision, not an
	// accident.
	public := map[string]bool{"GET /v2": true, "GET /acr/v1/_keys": true, "GET /healthz": true, "GET /readyz": true,
		"GET /oauth2/token": true, "POST /oauth2/token": true, "POST /oauth2/exchange": true,
		"GET /static/{file}": true, "GET /login": true, "POST /login": true, "POST /logout": true}
	identityOnly := map[string]bool{"GET /v2/": true, "POST /acr/v1/_import": true, "GET /": true,
		"GET /acr/v1/_operations/{id}": true, "POST /acr/v1/_operations/{id}:cancel": true,
		"POST /acr/v1/_operations/{id}:retry": true}
	session := ar.portalSession("nothing-here", password)
	routes := 0
	for _, api := range ar.srv.APIs() {
		for _, rt := range api.Routes {
			key := rt.Method + " " + rt.Pattern
			if rt.Need == nil {
				if !public[key] {
					t.Errorf("%s is public (no Need) but not among the routes meant to be", key)
				}
				continue
			}
			path := examplePath(t, rt.Pattern)
			req := httptest.NewRequest(rt.Method, path, nil)
			m, p, err := api.Match(req)
			if err != nil || m.Pattern != rt.Pattern {
				t.Errorf("%s %s: the example path %s does not match it (%v)", rt.Method, rt.Pattern, path, err)
				continue
			}
			routes++
			need := rt.Need(req, p)
			name := rt.Method + " " + path
			if api.Sessions != nil {
				ar.checkPortalRoute(rt.Method, path, need, session, identityOnly[key])
				continue
			}
			if r := ar.do(rt.Method, path, nil, nil); r.code != 401 || r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s without credentials: %d %q, want 401 with a challenge", name, r.code, r.header.Get("WWW-Authenticate"))
			}
			if len(need.Accesses) == 0 {
				if !identityOnly[key] {
					t.Errorf("%s needs only an identity, but is not among the routes meant to", key)
				}
				continue
			}
			if need.Accesses[0].Type == auth.TypeRegistry && need.Accesses[0].Name == auth.Catalog {
				continue // any identity may list; the listing is filtered
			}
			r := ar.do(rt.Method, path, basic("nothing-here", password), nil)
			if r.code != 403 || !strings.Contains(r.body, `"DENIED"`) {
				t.Errorf("%s by a token without %v (basic): %d %s, want 403 DENIED", name, need.Accesses, r.code, r.body)
			}
			r = ar.do(rt.Method, path, map[string]string{"Authorization": "Bearer " + bearer}, nil)
			if r.code != 401 || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
				t.Errorf("%s by a token without %v (bearer): %d %q, want 401 insufficient_scope", name, need.Accesses, r.code, r.header.Get("WWW-Authenticate"))
			}
		}
	}
	if routes < 40 {
		t.Fatalf("walked %d routes that need a permission; the tables have more", routes)
	}
}

// portalSession signs in to the portal and returns the session cookie.
func (ar *authRegistry) portalSession(user, password string) *http.Cookie {
	ar.t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	r, err := c.Get(ar.ts.URL + "/login")
	if err != nil {
		ar.t.Fatal(err)
	}
	page, _ := io.ReadAll(r.Body)
	r.Body.Close()
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	if csrf == nil {
		ar.t.Fatalf("sign-in page without a CSRF token: %s", page)
	}
	r, err = c.PostForm(ar.ts.URL+"/login", url.Values{"csrf": {string(csrf[1])}, "username": {user}, "password": {password}})
	if err != nil {
		ar.t.Fatal(err)
	}
	r.Body.Close()
	u, _ := url.Parse(ar.ts.URL)
	for _, c := range jar.Cookies(u) {
		if c.Name == "sluice_session" {
			return c
		}
	}
	ar.t.Fatalf("signing in as %s set no session (%d)", user, r.StatusCode)
	return nil
}

// checkPortalRoute checks a portal route refuses who may not use it: no
// session (credentials in headers are no session) goes to the sign-in page
// or gets 401; a session whose identity lacks the route's accesses gets
// 403, a forged post included.
func (ar *authRegistry) checkPortalRoute(method, path string, need auth.Requirement, session *http.Cookie, identityOnly bool) {
	ar.t.Helper()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(header map[string]string, cookie *http.Cookie) *http.Response {
		req, _ := http.NewRequest(method, ar.ts.URL+path, strings.NewReader("csrf=forged"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		r, err := noRedirect.Do(req)
		if err != nil {
			ar.t.Fatal(err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		return r
	}
	name := method + " " + path
	for _, header := range []map[string]string{nil, basic("admin", adminPassword)} {
		r := send(header, nil)
		switch {
		case method == "GET" && (r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/login?next=")):
			ar.t.Errorf("portal %s without a session (headers %v): %d %s, want 303 to /login", name, header != nil, r.StatusCode, r.Header.Get("Location"))
		case method != "GET" && r.StatusCode != http.StatusUnauthorized:
			ar.t.Errorf("portal %s without a session (headers %v): %d, want 401", name, header != nil, r.StatusCode)
		}
	}
	if identityOnly || len(need.Accesses) == 0 || (need.Accesses[0].Type == auth.TypeRegistry && need.Accesses[0].Name == auth.Catalog) {
		return
	}
	if r := send(nil, session); r.StatusCode != http.StatusForbidden {
		ar.t.Errorf("portal %s by a session without %v: %d, want 403", name, need.Accesses, r.StatusCode)
	}
}
