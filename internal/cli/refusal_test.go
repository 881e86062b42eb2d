package cli

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestNotAllowedIsNotNotLoggedIn: a token refused a permission it lacks is
// told what it may not do and how an admin grants it, whether the refusal
// came as a bearer 401 insufficient_scope (to a HEAD, without a body) or
// as a basic-auth 403; a wrong password is still "not logged in".
func TestNotAllowedIsNotNotLoggedIn(t *testing.T) {
	tr := newTestRegistry(t)
	tr.login()
	tr.pushImage("team/app", "1.0", "amd64", appFiles10)
	tr.pushImage("team/other", "1.0", "amd64", appFiles10)
	tr.must("scope-map", "create", "--name", "app-read", "--repository", "team/app", "content/read")
	// Straight from the API: the test's sluice hides generated passwords.
	resp, body := tr.do("POST", "/acr/v1/_tokens", "application/json", []byte(`{"name":"ci-bot","scopeMapId":"app-read"}`))
	var tok struct {
		Credentials struct {
			Passwords []struct{ Value string }
		}
	}
	if err := json.Unmarshal(body, &tok); err != nil || resp.StatusCode != http.StatusCreated || len(tok.Credentials.Passwords) == 0 {
		t.Fatalf("create token: %d %s", resp.StatusCode, body)
	}
	password := tok.Credentials.Passwords[0].Value
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
