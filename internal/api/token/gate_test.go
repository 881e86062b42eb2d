package token_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/api/distribution"
	"github.com/sluicehq/sluice/internal/api/mgmt"
	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/api/token"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/metadata"
)

// TestGateRefusals: every refusal that can carry a body carries the OCI
// error JSON naming who may not do what and the scope map action that
// grants it; a bearer caller gets 401 insufficient_scope (its client may
// ask for a better token), a basic-auth caller 403 DENIED; a HEAD answer,
// which has no body, says it in the challenge's error_description.
func TestGateRefusals(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	meta, err := metadata.OpenSQLite(ctx, filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := auth.NewService(ctx, meta, auth.Options{AdminPassword: "the-admin-password", KeyDir: filepath.Join(dir, "keys")}, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateScopeMap(ctx, "app-read", "", []string{"repositories/team/app/content/read"}); err != nil {
		t.Fatal(err)
	}
	tok, err := svc.CreateToken(ctx, "ci-bot", "app-read", true, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	password := tok.Passwords[0].Value
	const service = "registry.test"
	// The APIs' own tables say what each request needs; their handlers
	// are not reached by a refused request, and do nothing here.
	apis := append([]*route.API{distribution.New(nil, log).API()}, mgmt.New(nil, nil, nil, mgmt.Options{}, log).APIs()...)
	for _, a := range apis {
		for i := range a.Routes {
			a.Routes[i].Handle = func(http.ResponseWriter, *http.Request, route.Params) error { return nil }
		}
	}
	ts := httptest.NewServer(route.NewMux(token.NewGate(svc, token.Options{Service: service}, log).Wrap, apis...))
	t.Cleanup(ts.Close)

	id, err := svc.Login(ctx, "test", "ci-bot", password)
	if err != nil {
		t.Fatal(err)
	}
	// The token ci-bot's client holds after asking for pull and push on
	// team/app: pull only, all its scope map allows.
	bearer, _, _, err := svc.IssueAccess(id, service, []auth.Access{auth.Repo("team/app", auth.ActionPull, auth.ActionPush)})
	if err != nil {
		t.Fatal(err)
	}
	anonymous, _, _, err := svc.IssueAccess(svc.Anonymous(), service, []auth.Access{auth.Registry(auth.Catalog)})
	if err != nil {
		t.Fatal(err)
	}
	basicAuth := func(user, pass string) string {
		r, _ := http.NewRequest("GET", "/", nil)
		r.SetBasicAuth(user, pass)
		return r.Header.Get("Authorization")
	}
	const blob = "/blobs/sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"

	for _, c := range []struct {
		name, method, path, authorization string
		wantCode                          int
		wantChallenge                     []string // parts of WWW-Authenticate; nil: no challenge
		wantError                         string   // code: message
		wantDetail                        []auth.Access
	}{
		{
			name: "no credentials", method: "GET", path: "/v2/team/app/manifests/v1",
			wantCode: 401, wantChallenge: []string{`scope="repository:team/app:pull"`}, wantError: "UNAUTHORIZED: authentication required",
		},
		{
			name: "wrong password", method: "GET", path: "/v2/team/app/manifests/v1", authorization: basicAuth("ci-bot", "wrong"),
			wantCode: 401, wantChallenge: []string{`realm=`}, wantError: "UNAUTHORIZED: incorrect username or password",
		},
		{
			name: "basic push without content/write", method: "POST", path: "/v2/team/app/blobs/uploads/", authorization: basicAuth("ci-bot", password),
			wantCode: 403, wantError: "DENIED: token ci-bot may not push to team/app (it needs content/write)",
			wantDetail: []auth.Access{auth.Repo("team/app", auth.ActionPush)},
		},
		{
			name: "bearer push without content/write", method: "POST", path: "/v2/team/app/blobs/uploads/", authorization: "Bearer " + bearer,
			wantCode:      401,
			wantChallenge: []string{`scope="repository:team/app:push"`, `error="insufficient_scope"`},
			wantError:     "UNAUTHORIZED: token ci-bot may not push to team/app (it needs content/write)",
			wantDetail:    []auth.Access{auth.Repo("team/app", auth.ActionPush)},
		},
		{
			name: "bearer pull outside the scope map", method: "GET", path: "/v2/team/other/manifests/v1", authorization: "Bearer " + bearer,
			wantCode:      401,
			wantChallenge: []string{`scope="repository:team/other:pull"`, `error="insufficient_scope"`},
			wantError:     "UNAUTHORIZED: token ci-bot may not pull from team/other (it needs content/read)",
			wantDetail:    []auth.Access{auth.Repo("team/other", auth.ActionPull)},
		},
		{
			name: "bearer HEAD outside the scope map", method: "HEAD", path: "/v2/team/other" + blob, authorization: "Bearer " + bearer,
			wantCode: 401,
			wantChallenge: []string{`error="insufficient_scope"`,
				`error_description="token ci-bot may not pull from team/other (it needs content/read)"`},
		},
		{
			name: "bearer mount from a repository it cannot read", method: "POST",
			path: "/v2/team/app/blobs/uploads/?mount=" + strings.TrimPrefix(blob, "/blobs/") + "&from=team/base", authorization: "Bearer " + bearer,
			wantCode:      401,
			wantChallenge: []string{`scope="repository:team/app:push repository:team/base:pull"`, `error="insufficient_scope"`},
			wantError:     "UNAUTHORIZED: token ci-bot may not push to team/app (it needs content/write), nor pull from team/base (it needs content/read)",
			wantDetail:    []auth.Access{auth.Repo("team/app", auth.ActionPush), auth.Repo("team/base", auth.ActionPull)},
		},
		{
			name: "basic metadata read", method: "GET", path: "/acr/v1/team/app/_tags", authorization: basicAuth("ci-bot", password),
			wantCode: 403, wantError: "DENIED: token ci-bot may not read the metadata of team/app (it needs metadata/read)",
			wantDetail: []auth.Access{auth.Repo("team/app", auth.ActionMetadataRead)},
		},
		{
			name: "token API without being the admin", method: "GET", path: "/acr/v1/_tokens", authorization: basicAuth("ci-bot", password),
			wantCode: 403, wantError: "DENIED: token ci-bot may not manage the registry (only the admin user may)",
			wantDetail: []auth.Access{auth.Registry(auth.Admin)},
		},
		{
			name: "anonymous token", method: "GET", path: "/v2/team/app/tags/list", authorization: "Bearer " + anonymous,
			wantCode:      401,
			wantChallenge: []string{`error="insufficient_scope"`},
			wantError:     "UNAUTHORIZED: anonymous callers may not pull from team/app; log in first",
			wantDetail:    []auth.Access{auth.Repo("team/app", auth.ActionPull)},
		},
		{
			name: "invalid bearer token", method: "GET", path: "/v2/team/app/manifests/v1", authorization: "Bearer not.a.token",
			wantCode: 401, wantChallenge: []string{`error="invalid_token"`}, wantError: "UNAUTHORIZED: the bearer token is invalid or expired",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, ts.URL+c.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.authorization != "" {
				req.Header.Set("Authorization", c.authorization)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != c.wantCode {
				t.Errorf("status %d, want %d", resp.StatusCode, c.wantCode)
			}
			challenge := resp.Header.Get("WWW-Authenticate")
			if c.wantChallenge == nil && challenge != "" {
				t.Errorf("WWW-Authenticate %q on a %d", challenge, resp.StatusCode)
			}
			for _, part := range c.wantChallenge {
				if !strings.Contains(challenge, part) {
					t.Errorf("WWW-Authenticate %q lacks %s", challenge, part)
				}
			}
			if c.method != "HEAD" && strings.Contains(challenge, "error_description") {
				t.Errorf("WWW-Authenticate %q repeats the body's message", challenge)
			}
			if c.method == "HEAD" {
				return
			}
			var body struct {
				Errors []struct {
					Code    string        `json:"code"`
					Message string        `json:"message"`
					Detail  []auth.Access `json:"detail"`
				} `json:"errors"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Errors) != 1 {
				t.Fatalf("body is not one OCI error (%v): %+v", err, body)
			}
			e := body.Errors[0]
			if got := e.Code + ": " + e.Message; got != c.wantError {
				t.Errorf("error %q, want %q", got, c.wantError)
			}
			if !reflect.DeepEqual(e.Detail, c.wantDetail) {
				t.Errorf("detail %+v, want %+v", e.Detail, c.wantDetail)
			}
		})
	}
}
