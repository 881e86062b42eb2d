package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
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
