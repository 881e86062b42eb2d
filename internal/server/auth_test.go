package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/metadata"
)

const adminPassword = "admin-secret-password"

// authRegistry serves a registry with authentication on, holding one image
// in team-a/app and one in team-b/app.
type authRegistry struct {
	t   *testing.T
	srv *Server
	ts  *httptest.Server
}

func newAuthRegistry(t *testing.T, tweak func(*config.Config)) *authRegistry {
	t.Helper()
	cfg := config.Default()
	cfg.Data = t.TempDir()
	cfg.Log.Access = false
	cfg.AdminPassword = adminPassword
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ar := &authRegistry{t: t, srv: srv, ts: httptest.NewServer(srv.Handler())}
	t.Cleanup(func() {
		ar.ts.Close()
		srv.Close()
	})
	for _, repo := range []string{"team-a/app", "team-b/app"} {
		ar.pushImage(repo)
	}
	return ar
}

func (ar *authRegistry) pushImage(repo string) {
	ar.t.Helper()
	cfg := []byte(`{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":[]}}`)
	d := digest.FromBytes(cfg)
	if r := ar.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), basic("admin", adminPassword), cfg); r.code != 201 {
		ar.t.Fatalf("push config: %d %s", r.code, r.body)
	}
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}`, d, len(cfg))
	h := basic("admin", adminPassword)
	h["Content-Type"] = "application/vnd.oci.image.manifest.v1+json"
	if r := ar.do("PUT", "/v2/"+repo+"/manifests/v1", h, []byte(m)); r.code != 201 {
		ar.t.Fatalf("push manifest: %d %s", r.code, r.body)
	}
}

type resp struct {
	code   int
	header http.Header
	body   string
}

func (ar *authRegistry) do(method, path string, header map[string]string, body []byte) resp {
	ar.t.Helper()
	req, err := http.NewRequest(method, ar.ts.URL+path, bytes.NewReader(body))
	if err != nil {
		ar.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		ar.t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{code: r.StatusCode, header: r.Header, body: string(b)}
}

func basic(user, pass string) map[string]string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, pass)
	return map[string]string{"Authorization": req.Header.Get("Authorization")}
}

// createToken creates a token through the API and returns its password1.
func (ar *authRegistry) createToken(name, scopeMap string) string {
	ar.t.Helper()
	r := ar.do("POST", "/acr/v1/_tokens", basic("admin", adminPassword), []byte(fmt.Sprintf(`{"name":%q,"scopeMapId":%q}`, name, scopeMap)))
	if r.code != 201 {
		ar.t.Fatalf("create token %s: %d %s", name, r.code, r.body)
	}
	var tok struct {
		Credentials struct {
			Passwords []struct{ Value string }
		}
	}
	if err := json.Unmarshal([]byte(r.body), &tok); err != nil || len(tok.Credentials.Passwords) != 2 {
		ar.t.Fatalf("token answer %s: %v", r.body, err)
	}
	return tok.Credentials.Passwords[0].Value
}

// bearer gets an access token for scopes with basic credentials.
func (ar *authRegistry) bearer(user, pass string, scopes ...string) (string, int) {
	ar.t.Helper()
	q := url.Values{"service": {strings.TrimPrefix(ar.ts.URL, "http://")}, "scope": scopes}
	var h map[string]string
	if user != "" {
		h = basic(user, pass)
	}
	r := ar.do("GET", "/oauth2/token?"+q.Encode(), h, nil)
	if r.code != 200 {
		return "", r.code
	}
	var tok struct {
		Token string `json:"token"`
	}
	_ = json.Unmarshal([]byte(r.body), &tok)
	return tok.Token, 200
}

// routeClass is one kind of request; allowedCode is its answer once past
// the gate.
type routeClass struct {
	name, method, path, body string
	scope                    string
	allowedCode              int
}

var routeClasses = []routeClass{
	{"version check", "GET", "/v2/", "", "", 200},
	{"pull", "GET", "/v2/team-a/app/manifests/v1", "", "repository:team-a/app:pull", 200},
	{"pull other team", "GET", "/v2/team-b/app/manifests/v1", "", "repository:team-b/app:pull", 200},
	{"push", "POST", "/v2/team-a/app/blobs/uploads/", "", "repository:team-a/app:push", 202},
	{"delete", "DELETE", "/v2/team-a/app/manifests/sha256:" + strings.Repeat("0", 64), "", "repository:team-a/app:delete", 404},
	{"catalog", "GET", "/v2/_catalog", "", "registry:catalog:*", 200},
	{"metadata read", "GET", "/acr/v1/team-a/app", "", "repository:team-a/app:metadata_read", 200},
	{"metadata write", "PATCH", "/acr/v1/team-a/app", `{"listEnabled":true}`, "repository:team-a/app:metadata_write", 200},
	{"streaming setting", "POST", "/acr/v1/team-a/app/_streaming", `{"convertPushedImages":false}`, "repository:team-a/app:metadata_write", 202},
	{"teleport check", "GET", "/mount/v1/team-a/app/_manifests/v1", "", "repository:team-a/app:pull", 404},
	{"metrics", "GET", "/metrics", "", "registry:admin:*", 200},
	{"tokens", "GET", "/acr/v1/_tokens", "", "registry:admin:*", 200},
	{"usage", "GET", "/acr/v1/_usage", "", "registry:admin:*", 200},
}

// TestAuthorizationMatrix checks every identity kind against every route
// class, with basic credentials and with bearer tokens: what is not
// allowed is refused.
func TestAuthorizationMatrix(t *testing.T) {
	// Every failed login here comes from 127.0.0.1: lift the limit.
	ar := newAuthRegistry(t, func(c *config.Config) { c.Auth.FailedLoginBurst = 1 << 20 })
	ctx := context.Background()
	passwords := map[string]string{}
	for _, m := range []string{"_repositories_pull", "_repositories_pull_metadata_read", "_repositories_push", "_repositories_push_metadata_write", "_repositories_admin"} {
		passwords[m] = ar.createToken("tok"+strings.ReplaceAll(m, "_", "-"), m)
	}
	if r := ar.do("POST", "/acr/v1/_scopemaps", basic("admin", adminPassword), []byte(`{"name":"team-a-devs","actions":["repositories/team-a/*/content/read","repositories/team-a/*/content/write","repositories/team-a/*/metadata/read"]}`)); r.code != 201 {
		t.Fatalf("create scope map: %d %s", r.code, r.body)
	}
	passwords["custom"] = ar.createToken("team-a-dev", "team-a-devs")
	passwords["disabled"] = ar.createToken("disabled-tok", "_repositories_admin")
	if r := ar.do("PATCH", "/acr/v1/_tokens/disabled-tok", basic("admin", adminPassword), []byte(`{"status":"disabled"}`)); r.code != 200 {
		t.Fatalf("disable token: %d %s", r.code, r.body)
	}
	ar.createToken("expired-tok", "_repositories_admin")
	hash, _ := bcrypt.GenerateFromPassword([]byte("expired-password"), bcrypt.MinCost)
	if err := ar.srv.meta.SetTokenPassword(ctx, "expired-tok", metadata.TokenPassword{Name: "password1", Hash: string(hash),
		CreatedAt: time.Now().Add(-48 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}

	type identity struct {
		name, user, pass string
		allowed          []string // route classes allowed; nil: none
	}
	all := []string{}
	for _, rc := range routeClasses {
		all = append(all, rc.name)
	}
	identities := []identity{
		{"anonymous", "", "", nil},
		{"admin", "admin", adminPassword, all},
		{"pull", "tok-repositories-pull", passwords["_repositories_pull"], []string{"version check", "pull", "pull other team", "catalog", "teleport check"}},
		{"pull+metadata read", "tok-repositories-pull-metadata-read", passwords["_repositories_pull_metadata_read"], []string{"version check", "pull", "pull other team", "catalog", "teleport check", "metadata read"}},
		{"push", "tok-repositories-push", passwords["_repositories_push"], []string{"version check", "pull", "pull other team", "push", "catalog", "teleport check"}},
		{"push+metadata write", "tok-repositories-push-metadata-write", passwords["_repositories_push_metadata_write"], []string{"version check", "pull", "pull other team", "push", "catalog", "teleport check", "metadata read", "metadata write", "streaming setting"}},
		{"repositories admin", "tok-repositories-admin", passwords["_repositories_admin"], []string{"version check", "pull", "pull other team", "push", "delete", "catalog", "teleport check", "metadata read", "metadata write", "streaming setting"}},
		{"custom team-a/*", "team-a-dev", passwords["custom"], []string{"version check", "pull", "push", "catalog", "teleport check", "metadata read"}},
		{"disabled token", "disabled-tok", passwords["disabled"], nil},
		{"expired password", "expired-tok", "expired-password", nil},
		{"wrong password", "tok-repositories-admin", "not-the-password", nil},
	}
	for _, id := range identities {
		for _, rc := range routeClasses {
			allowed := false
			for _, a := range id.allowed {
				allowed = allowed || a == rc.name
			}
			credentialed := id.allowed != nil
			t.Run(id.name+"/basic/"+rc.name, func(t *testing.T) {
				var h map[string]string
				if id.user != "" {
					h = basic(id.user, id.pass)
				}
				r := ar.do(rc.method, rc.path, h, []byte(rc.body))
				want := rc.allowedCode
				switch {
				case allowed:
				case credentialed:
					want = 403
				default:
					want = 401
				}
				if r.code != want {
					t.Fatalf("status %d, want %d: %s", r.code, want, r.body)
				}
				if want == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), `Bearer realm="`+ar.ts.URL+`/oauth2/token"`) {
					t.Fatalf("challenge %q", r.header.Get("WWW-Authenticate"))
				}
			})
			t.Run(id.name+"/bearer/"+rc.name, func(t *testing.T) {
				var scopes []string
				if rc.scope != "" {
					scopes = []string{rc.scope}
				}
				tok, code := ar.bearer(id.user, id.pass, scopes...)
				if code != 200 {
					if credentialed || id.user == "" {
						t.Fatalf("token endpoint: %d", code)
					}
					return // bad credentials get no token at all
				}
				r := ar.do(rc.method, rc.path, map[string]string{"Authorization": "Bearer " + tok}, []byte(rc.body))
				want := rc.allowedCode
				if !allowed && !(id.user == "" && rc.name == "version check") {
					want = 401
				}
				if r.code != want {
					t.Fatalf("status %d, want %d: %s", r.code, want, r.body)
				}
				if want == 401 && !strings.Contains(r.header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
					t.Fatalf("challenge %q lacks insufficient_scope", r.header.Get("WWW-Authenticate"))
				}
			})
		}
	}
}

func newTestServer(srv *Server) *httptest.Server { return httptest.NewServer(srv.Handler()) }

// captureStderr redirects os.Stderr until restore is called; out returns
// what was written.
func captureStderr(t *testing.T) (out func() []byte, restore func()) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	orig := os.Stderr
	os.Stderr = w
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(&buf, r)
		close(done)
	}()
	return func() []byte { <-done; return buf.Bytes() }, func() {
		os.Stderr = orig
		w.Close()
	}
}
