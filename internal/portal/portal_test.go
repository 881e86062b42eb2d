package portal_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/server/servertest"
)

const adminPassword = "portal-test-admin"

// user is a browser: a cookie jar that does not follow redirects, so
// that each answer can be checked.
type user struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newUser(t *testing.T, srv *servertest.Server) *user {
	jar, _ := cookiejar.New(nil)
	return &user{t: t, base: srv.TS.URL, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type answer struct {
	code     int
	location string
	body     string
}

func (u *user) get(path string) answer {
	u.t.Helper()
	r, err := u.c.Get(u.base + path)
	if err != nil {
		u.t.Fatal(err)
	}
	return read(r)
}

// post posts a form as the portal's own pages do (same origin), with the
// CSRF token of the session unless form sets one.
func (u *user) post(path string, form url.Values, header ...string) answer {
	u.t.Helper()
	if !form.Has("csrf") {
		form.Set("csrf", u.csrf())
	}
	req, _ := http.NewRequest(http.MethodPost, u.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	r, err := u.c.Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	return read(r)
}

var csrfRE = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`)

// csrf reads the CSRF token of the forms of a page.
func (u *user) csrf() string {
	u.t.Helper()
	page := u.get("/login").body
	if a := u.get("/"); a.code == http.StatusOK {
		page = a.body
	}
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		u.t.Fatalf("no CSRF token on the page:\n%s", page)
	}
	return m[1]
}

func read(r *http.Response) answer {
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return answer{code: r.StatusCode, location: r.Header.Get("Location"), body: string(b)}
}

func (u *user) signIn(name, password string) answer {
	u.t.Helper()
	return u.post("/login", url.Values{"username": {name}, "password": {password}, "next": {"/repositories"}})
}

func start(t *testing.T, tweak func(*config.Config)) *servertest.Server {
	return servertest.Start(t, func(c *config.Config) {
		c.AdminPassword = adminPassword
		if tweak != nil {
			tweak(c)
		}
	})
}

func TestSignInAndOut(t *testing.T) {
	srv := start(t, nil)
	u := newUser(t, srv)
	if a := u.get("/operations"); a.code != http.StatusSeeOther || a.location != "/login?next=%2Foperations" {
		t.Fatalf("a page without a session: %d %s", a.code, a.location)
	}
	if a := u.signIn("admin", "wrong"); a.code != http.StatusUnauthorized || !strings.Contains(a.body, "Wrong user name or password.") {
		t.Fatalf("a wrong password: %d %s", a.code, a.body)
	}
	a := u.signIn("admin", adminPassword)
	if a.code != http.StatusSeeOther || a.location != "/repositories" {
		t.Fatalf("sign-in: %d %s", a.code, a.location)
	}
	var session *http.Cookie
	for _, c := range u.c.Jar.Cookies(mustURL(t, u.base)) {
		if c.Name == "sluice_session" {
			session = c
		}
	}
	if session == nil {
		t.Fatal("no session cookie")
	}
	if a := u.get("/repositories"); a.code != http.StatusOK || !strings.Contains(a.body, "Signed in as <strong>admin</strong>") {
		t.Fatalf("repositories after sign-in: %d", a.code)
	}
	// A return path elsewhere is not followed.
	v := newUser(t, srv)
	if a := v.post("/login", url.Values{"username": {"admin"}, "password": {adminPassword}, "next": {"//evil.example/"}}); a.location != "/" {
		t.Fatalf("sign-in with next=//evil.example/ went to %q", a.location)
	}
	if a := u.post("/logout", url.Values{}); a.code != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", a.code)
	}
	if a := u.get("/repositories"); a.code != http.StatusSeeOther {
		t.Fatalf("a page after sign-out: %d", a.code)
	}
}

// The cookie's attributes, on the wire.
func TestSessionCookieAttributes(t *testing.T) {
	srv := start(t, nil)
	u := newUser(t, srv)
	csrf := u.csrf()
	req, _ := http.NewRequest(http.MethodPost, u.base+"/login", strings.NewReader(url.Values{"csrf": {csrf}, "username": {"admin"}, "password": {adminPassword}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, c := range u.c.Jar.Cookies(mustURL(t, u.base)) {
		req.AddCookie(c)
	}
	r, err := u.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	var set string
	for _, h := range r.Header.Values("Set-Cookie") {
		if strings.HasPrefix(h, "sluice_session=") {
			set = h
		}
	}
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Max-Age=10800", "Path=/"} {
		if !strings.Contains(set, want) {
			t.Errorf("session cookie %q lacks %s", set, want)
		}
	}
	if strings.Contains(set, "Secure") {
		t.Errorf("session cookie %q is Secure over plain HTTP: the browser would drop it", set)
	}
}

// Failed sign-ins count against the same limit as the API's logins.
func TestFailedSignInsAreLimited(t *testing.T) {
	srv := start(t, func(c *config.Config) { c.Auth.FailedLoginBurst = 3 })
	u := newUser(t, srv)
	var last answer
	for range 4 {
		last = u.signIn("admin", "wrong")
	}
	if last.code != http.StatusTooManyRequests || !strings.Contains(last.body, "Too many failed sign-ins") {
		t.Fatalf("the 4th failed sign-in of 3 allowed: %d", last.code)
	}
	// The API's basic credentials are refused as well: one limit.
	req, _ := http.NewRequest(http.MethodGet, srv.TS.URL+"/acr/v1/_catalog", nil)
	req.SetBasicAuth("admin", adminPassword)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("the API after the portal's failed sign-ins: %d, want 429", r.StatusCode)
	}
}

// A form post needs its session's CSRF token and to come from this site,
// even from the admin.
func TestFormsNeedTheirTokenAndThisSite(t *testing.T) {
	srv := start(t, nil)
	u := newUser(t, srv)
	u.signIn("admin", adminPassword)
	for _, c := range []struct {
		name   string
		form   url.Values
		header []string
	}{
		{"no token", url.Values{"csrf": {""}}, nil},
		{"a wrong token", url.Values{"csrf": {"forged"}}, nil},
		{"another site", url.Values{}, []string{"Sec-Fetch-Site", "cross-site"}},
		{"another origin", url.Values{}, []string{"Sec-Fetch-Site", "", "Origin", "http://evil.example"}},
	} {
		c.form.Set("streaming", "start")
		if a := u.post("/repositories/team/app/_streaming", c.form, c.header...); a.code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", c.name, a.code)
		}
	}
	if a := u.post("/repositories/team/app/_streaming", url.Values{"streaming": {"start"}}); a.code != http.StatusSeeOther {
		t.Fatalf("the same post with its token: %d %s", a.code, a.body)
	}
	if repo, err := srv.Registry.Repository(t.Context(), "team/app"); err != nil || !repo.Streaming {
		t.Fatalf("team/app after Start artifact streaming: %+v %v", repo, err)
	}
}

// A session ends when its token is deleted, or its password regenerated.
func TestASessionEndsWithItsToken(t *testing.T) {
	srv := start(t, nil)
	admin := newUser(t, srv)
	admin.signIn("admin", adminPassword)
	a := admin.post("/access/tokens", url.Values{"name": {"viewer-1"}, "scopeMap": {"_repositories_pull_metadata_read"}})
	if a.code != http.StatusOK || !strings.Contains(a.body, "shown only this once") {
		t.Fatalf("create a token: %d %s", a.code, a.body)
	}
	password := regexp.MustCompile(`password1: <code class="digest" title="([^"]+)"`).FindStringSubmatch(a.body)
	if password == nil {
		t.Fatalf("no password1 on the page:\n%s", a.body)
	}
	if a := admin.get("/access"); strings.Contains(a.body, password[1]) {
		t.Fatal("the Access page shows the password again")
	}
	viewer := newUser(t, srv)
	if a := viewer.signIn("viewer-1", password[1]); a.code != http.StatusSeeOther {
		t.Fatalf("sign in as the token: %d", a.code)
	}
	if a := viewer.get("/repositories"); a.code != http.StatusOK {
		t.Fatalf("the token's session: %d", a.code)
	}
	if a := viewer.get("/access"); a.code != http.StatusForbidden {
		t.Fatalf("the token's session on the Access page: %d, want 403", a.code)
	}
	if a := admin.post("/access/tokens/viewer-1/_credentials", url.Values{"password": {"password1"}}); a.code != http.StatusOK {
		t.Fatalf("regenerate password1: %d", a.code)
	}
	if a := viewer.get("/repositories"); a.code != http.StatusSeeOther || !strings.HasPrefix(a.location, "/login?") {
		t.Fatalf("the session after its password was regenerated: %d %s", a.code, a.location)
	}
}

// With authentication off there is no sign-in, and forms still need their
// token.
func TestAuthenticationOff(t *testing.T) {
	srv := start(t, func(c *config.Config) { c.Auth.Enabled = false })
	u := newUser(t, srv)
	a := u.get("/")
	if a.code != http.StatusOK || !strings.Contains(a.body, "authentication off") {
		t.Fatalf("overview with authentication off: %d", a.code)
	}
	if a := u.get("/login"); a.code != http.StatusSeeOther {
		t.Fatalf("the sign-in page with authentication off: %d", a.code)
	}
	if a := u.post("/repositories/team/app/_streaming", url.Values{"streaming": {"start"}, "csrf": {"forged"}}); a.code != http.StatusForbidden {
		t.Fatalf("a forged post with authentication off: %d", a.code)
	}
	if a := u.post("/repositories/team/app/_streaming", url.Values{"streaming": {"start"}}); a.code != http.StatusSeeOther {
		t.Fatalf("a post with authentication off: %d %s", a.code, a.body)
	}
}

func TestPortalOff(t *testing.T) {
	srv := start(t, func(c *config.Config) { c.Portal.Enabled = false })
	u := newUser(t, srv)
	for _, path := range []string{"/", "/login", "/static/portal.css"} {
		if a := u.get(path); a.code != http.StatusNotFound {
			t.Errorf("%s with the portal off: %d", path, a.code)
		}
	}
	if a := u.get("/healthz"); a.code != http.StatusOK {
		t.Errorf("/healthz with the portal off: %d", a.code)
	}
}

// Every page and action is counted under its route's name.
func TestPagesAreInTheMetrics(t *testing.T) {
	srv := start(t, nil)
	u := newUser(t, srv)
	u.signIn("admin", adminPassword)
	u.get("/repositories")
	u.get("/operations")
	req, _ := http.NewRequest(http.MethodGet, srv.TS.URL+"/metrics", nil)
	req.SetBasicAuth("admin", adminPassword)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	for _, route := range []string{"portal_login", "portal_repositories", "portal_operations"} {
		if !bytes.Contains(b, []byte(fmt.Sprintf(`route=%q`, route))) {
			t.Errorf("no request metrics for %s", route)
		}
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// A token expiring in the past is refused with the auth service's own
// reason, not created.
func TestTokenWithPastExpiryIsRefused(t *testing.T) {
	srv := start(t, nil)
	u := newUser(t, srv)
	u.signIn("admin", adminPassword)
	a := u.post("/access/tokens", url.Values{"name": {"old-token"}, "scopeMap": {"_repositories_pull"}, "expiry": {"2000-01-01"}})
	if a.code != http.StatusBadRequest || !strings.Contains(a.body, "not in the future") {
		t.Fatalf("a token expiring in 2000: %d", a.code)
	}
	if strings.Contains(u.get("/access").body, "old-token") {
		t.Fatal("the refused token was created")
	}
}
