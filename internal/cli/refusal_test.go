package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/lazypull"
)

// TestNotAllowedIsNotNotLoggedIn: a token refused a permission it lacks is
// told what it may not do and how an admin grants it, whether the refusal
// came as a bearer 401 insufficient_scope (to a HEAD, without a body) or
// as a basic-auth 403; a wrong password is still "not logged in".
func TestNotAllowedIsNotNotLoggedIn(t *testing.T) {
	tr, password := newAppReadRegistry(t)
	loggedIn := tr.getenv

	tr.getenv = withCredentials(loggedIn, "ci-bot", password)
	tr.must("manifest", "list-referrers", "-n", "team/app:1.0")
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{
			name: "bearer pull outside the scope map",
			args: []string{"manifest", "list-referrers", "-n", "team/other:1.0"},
			want: []string{
				"token ci-bot may not pull from team/other (it needs content/read)",
				"Not allowed to pull from team/other.",
				"sluice scope-map update --name SCOPE_MAP --add-repository team/other content/read",
			},
		},
		{
			name: "basic metadata read",
			args: []string{"repository", "show", "--repository", "team/app"},
			want: []string{
				"DENIED: token ci-bot may not read the metadata of team/app (it needs metadata/read) (HTTP 403)",
				"Not allowed to read the metadata of team/app.",
				"--add-repository team/app metadata/read",
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := tr.run(c.args...)
			if r.code != ExitError {
				t.Errorf("exit %d, want %d", r.code, ExitError)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			if strings.Contains(r.stderr, "Not logged in") {
				t.Errorf("a token without the permission is told it is not logged in:\n%s", r.stderr)
			}
		})
	}

	tr.getenv = withCredentials(loggedIn, "ci-bot", "wrong-password")
	if r := tr.run("manifest", "list-referrers", "-n", "team/app:1.0"); r.code == 0 || !strings.Contains(r.stderr, "Not logged in") || strings.Contains(r.stderr, "Not allowed") {
		t.Errorf("a wrong password: exit %d\n%s", r.code, r.stderr)
	}
}

// TestPullRefusalSaysWhatIsNotAllowed resolves images with containerd's
// own resolver, as sluice pull does, so that the refusals are containerd's
// words for the registry's answers: a token without pull on the repository
// is told what it may not do, one with a wrong password or none to log in.
func TestPullRefusalSaysWhatIsNotAllowed(t *testing.T) {
	tr, password := newAppReadRegistry(t)
	loggedIn := tr.getenv
	tr.pull = func(ctx context.Context, ref string, o lazypull.Options) (*lazypull.Result, error) {
		if _, _, err := lazypull.NewResolver(ctx, o).Resolve(ctx, ref); err != nil {
			return nil, fmt.Errorf("pull %s: %w", ref, err)
		}
		return &lazypull.Result{Image: ref}, nil
	}

	tr.getenv = withCredentials(loggedIn, "ci-bot", password)
	if r := tr.run("pull", tr.host+"/team/app:1.0"); r.code != 0 {
		t.Fatalf("pull within the scope map: exit %d\n%s", r.code, r.stderr)
	}
	r := tr.run("pull", tr.host+"/team/other:1.0")
	want := "Not allowed to pull from team/other.\nAn admin can grant it in the token's scope map: sluice scope-map update --name SCOPE_MAP --add-repository team/other content/read"
	if r.code != ExitError || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "Not logged in") {
		t.Errorf("pull outside the scope map: exit %d\n%s", r.code, r.stderr)
	}

	tr.getenv = withCredentials(loggedIn, "ci-bot", "wrong-password")
	if r := tr.run("pull", tr.host+"/team/app:1.0"); r.code != ExitError || !strings.Contains(r.stderr, "Not logged in") || strings.Contains(r.stderr, "Not allowed") {
		t.Errorf("pull with a wrong password: exit %d\n%s", r.code, r.stderr)
	}
}

// newAppReadRegistry starts a registry with the images team/app:1.0 and
// team/other:1.0 and the token ci-bot, whose scope map app-read may only
// pull from team/app, and answers the token's password.
func newAppReadRegistry(t *testing.T) (*testRegistry, string) {
	t.Helper()
	tr := newTestRegistry(t)
	tr.login()
	tr.pushImage("team/app", "1.0", "amd64", appFiles10)
	tr.pushImage("team/other", "1.0", "amd64", appFiles10)
	tr.must("scope-map", "create", "--name", "app-read", "--repository", "team/app", "content/read")
	// Straight from the API: the test's sluice hides generated passwords.
	resp, body := tr.do("POST", "/acr/v1/_tokens", "application/json", []byte(`{"name":"ci-bot","scopeMapId":"app-read"}`))
	var tok struct {
		Credentials struct{ Passwords []struct{ Value string } }
	}
	if err := json.Unmarshal(body, &tok); err != nil || resp.StatusCode != http.StatusCreated || len(tok.Credentials.Passwords) == 0 {
		t.Fatalf("create token: %d %s", resp.StatusCode, body)
	}
	return tr, tok.Credentials.Passwords[0].Value
}
