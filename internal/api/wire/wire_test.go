package wire

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/auth"
)

func TestPage(t *testing.T) {
	for _, tc := range []struct {
		query   string
		n       int
		last    string
		wantErr bool
	}{
		{"", 100, "", false},
		{"n=5&last=b", 5, "b", false},
		{"n=5000", 1000, "", false},
		{"n=-1", 0, "", true},
		{"n=x", 0, "", true},
	} {
		q, _ := url.ParseQuery(tc.query)
		n, last, err := Page(q, 100, 1000)
		if (err != nil) != tc.wantErr || (!tc.wantErr && (n != tc.n || last != tc.last)) {
			t.Errorf("Page(%q) = %d %q %v", tc.query, n, last, err)
		}
		if tc.wantErr && !errors.Is(err, ErrPageInvalid) {
			t.Errorf("Page(%q): %v, want ErrPageInvalid", tc.query, err)
		}
	}
}

func TestNamesLinksTheNextPage(t *testing.T) {
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/v2/_catalog?n=2", nil)
	err := Names(rec, r, "/v2/_catalog", "repositories", 10, 100, map[string]any{"extra": 1}, func(last string, n int) ([]string, bool, error) {
		return []string{"a", "b"}, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if link := rec.Header().Get("Link"); link != `</v2/_catalog?last=b&n=2>; rel="next"` {
		t.Errorf("Link %q", link)
	}
	var body map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	if len(body["repositories"].([]any)) != 2 || body["extra"] != float64(1) {
		t.Errorf("body %s", rec.Body)
	}
	rec = httptest.NewRecorder()
	_ = Names(rec, r, "/x", "tags", 10, 100, nil, func(string, int) ([]string, bool, error) { return nil, false, nil })
	if rec.Body.String() != `{"tags":[]}` || rec.Header().Get("Link") != "" {
		t.Errorf("an empty last page: %s %q", rec.Body, rec.Header().Get("Link"))
	}
}

func TestRefusal(t *testing.T) {
	missing := []auth.Access{auth.Repo("team/app", auth.ActionPush)}
	basicCaller := &auth.Caller{Identity: &auth.Identity{Kind: auth.TokenUser, Name: "ci-bot"}}
	rec := httptest.NewRecorder()
	if !Refusal(rec, httptest.NewRequest("PUT", "/v2/team/app/manifests/v1", nil), &auth.DeniedError{Caller: basicCaller, Missing: missing}) {
		t.Fatal("a DeniedError was not answered")
	}
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), `"DENIED"`) || !strings.Contains(rec.Body.String(), "content/write") {
		t.Errorf("basic refusal: %d %s", rec.Code, rec.Body)
	}
	claims := &auth.Claims{IdentityKind: auth.TokenUser}
	claims.Subject = "ci-bot"
	bearer := &auth.Caller{Identity: &auth.Identity{}, Claims: claims,
		Challenge: func(scope, code, _ string) string { return "Bearer scope=" + scope + ",error=" + code }}
	rec = httptest.NewRecorder()
	Refusal(rec, httptest.NewRequest("PUT", "/v2/team/app/manifests/v1", nil), &auth.DeniedError{Caller: bearer, Missing: missing})
	if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") != "Bearer scope=repository:team/app:push,error=insufficient_scope" {
		t.Errorf("bearer refusal: %d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
	rec = httptest.NewRecorder()
	if !Refusal(rec, httptest.NewRequest("PATCH", "/x", nil), &route.MethodError{Method: "PATCH", Allow: []string{"GET", "PUT"}}) ||
		rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, PUT" {
		t.Errorf("method error: %d %v", rec.Code, rec.Header())
	}
	if Refusal(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil), errors.New("other")) {
		t.Error("an ordinary error was answered as a refusal")
	}
}
