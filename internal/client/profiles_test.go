package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// TestStartupProfileAnswers: only a registry without the endpoint means
// "no profiles kept"; a Sluice that knows neither the repository nor the
// layer gives an error of its own.
func TestStartupProfileAnswers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  int
		body    string
		noProf  bool
		wantErr bool
	}{
		{"no profile yet", 404, `{"errors":[{"code":"PROFILE_UNKNOWN","message":"no profile"}]}`, false, false},
		{"another registry", 404, "404 page not found", true, true},
		{"method not allowed", 405, "", true, true},
		{"a Sluice without profiles", 404, `{"errors":[{"code":"NOT_FOUND","message":"no such endpoint"}]}`, true, true},
		{"layer unknown", 404, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}`, false, true},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(tc.body, "{") {
				w.Header().Set("Content-Type", "application/json")
			}
			w.WriteHeader(tc.status)
			_, _ = w.Write([]byte(tc.body))
		}))
		c := New(strings.TrimPrefix(srv.URL, "http://"), Options{PlainHTTP: true})
		ranges, err := c.StartupProfile(context.Background(), "app", digest.FromString("layer"))
		srv.Close()
		if (err != nil) != tc.wantErr || errors.Is(err, ErrNoProfiles) != tc.noProf || ranges != nil {
			t.Errorf("%s: %v, %v; want an error %v, ErrNoProfiles %v", tc.name, ranges, err, tc.wantErr, tc.noProf)
		}
	}
}

// TestStartupProfileScope: the credentials are asked for with the
// profile's repository in scope, so that credentials kept for that
// repository alone serve it.
func TestStartupProfileScope(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "team" || p != "secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ranges":[[0,10]]}`))
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	var scopes [][]string
	cred := func(ctx context.Context, h string) (auth.Credential, error) {
		scopes = append(scopes, auth.GetAllScopesForHost(ctx, h))
		return auth.Credential{Username: "team", Password: "secret"}, nil
	}
	c := New(host, Options{PlainHTTP: true, Credential: cred})
	if _, err := c.StartupProfile(context.Background(), "team/app", digest.FromString("layer")); err != nil {
		t.Fatal(err)
	}
	if err := c.PutStartupProfile(context.Background(), "team/app", digest.FromString("layer"), nil); err != nil {
		t.Fatal(err)
	}
	if len(scopes) != 2 {
		t.Fatalf("credentials asked %d times, want 2", len(scopes))
	}
	for _, s := range scopes {
		if len(s) != 1 || s[0] != "repository:team/app:pull" {
			t.Errorf("credentials asked with scopes %q, want the profile's repository", s)
		}
	}
}
