package route

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/oci"
)

func TestMatch(t *testing.T) {
	noop := func(http.ResponseWriter, *http.Request, Params) error { return nil }
	api := (&API{Prefix: "/v2", Routes: []Route{
		{Method: "GET", Pattern: "/v2/", Name: "base", Handle: noop},
		{Method: "GET", Pattern: "/v2/_catalog", Name: "catalog", Handle: noop},
		{Method: "GET", Pattern: "/v2/{name...}/manifests/{reference}", Name: "manifest", Handle: noop},
		{Method: "PUT", Pattern: "/v2/{name...}/manifests/{reference}", Name: "manifest", Handle: noop},
		{Method: "POST", Pattern: "/v2/{name...}/blobs/uploads/", Name: "uploads", Handle: noop},
		{Method: "PATCH", Pattern: "/v2/{name...}/blobs/uploads/{upload}", Name: "upload", Handle: noop},
		{Method: "GET", Pattern: "/v2/{name...}/blobs/{digest}", Name: "blob", Handle: noop},
		{Method: "POST", Pattern: "/v2/_operations/{id}:cancel", Name: "cancel", Handle: noop},
	}}).Compile()
	for _, tc := range []struct {
		method, path string
		want         string // route name; "" with wantErr
		params       Params
		wantErr      error
		allow        []string
	}{
		{"GET", "/v2/", "base", Params{}, nil, nil},
		{"HEAD", "/v2/", "base", Params{}, nil, nil},
		{"GET", "/v2/_catalog", "catalog", Params{}, nil, nil},
		{"GET", "/v2/team/app/manifests/latest", "manifest", Params{"name": "team/app", "reference": "latest"}, nil, nil},
		// The name is what lies before the last /manifests/: a repository
		// may have the word in its name.
		{"GET", "/v2/a/manifests/b/manifests/v1", "manifest", Params{"name": "a/manifests/b", "reference": "v1"}, nil, nil},
		{"POST", "/v2/app/blobs/uploads/", "uploads", Params{"name": "app"}, nil, nil},
		{"PATCH", "/v2/app/blobs/uploads/abc", "upload", Params{"name": "app", "upload": "abc"}, nil, nil},
		{"GET", "/v2/app/blobs/sha256:aa", "blob", Params{"name": "app", "digest": "sha256:aa"}, nil, nil},
		{"POST", "/v2/_operations/42:cancel", "cancel", Params{"id": "42"}, nil, nil},
		{"DELETE", "/v2/app/manifests/v1", "", nil, nil, []string{"GET", "PUT"}},
		{"GET", "/v2/app/manifests/", "", nil, ErrNotFound, nil},       // an empty reference
		{"GET", "/v2/manifests/v1", "", nil, ErrNotFound, nil},         // no name
		{"GET", "/v2/_x/manifests/v1", "", nil, ErrNotFound, nil},      // a name component starting with _
		{"GET", "/v2/a//b/manifests/v1", "", nil, ErrNotFound, nil},    // an empty component
		{"POST", "/v2/_operations/:cancel", "", nil, ErrNotFound, nil}, // an empty id
	} {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		rt, p, err := api.Match(req)
		var me *MethodError
		switch {
		case tc.allow != nil:
			if !errors.As(err, &me) || !reflect.DeepEqual(me.Allow, tc.allow) {
				t.Errorf("%s %s: %v, want a method error allowing %v", tc.method, tc.path, err, tc.allow)
			}
		case tc.wantErr != nil:
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%s %s: %v, want %v", tc.method, tc.path, err, tc.wantErr)
			}
		case err != nil || rt.Name != tc.want || !reflect.DeepEqual(p, tc.params):
			t.Errorf("%s %s: %v %v %v, want %s %v", tc.method, tc.path, rt, p, err, tc.want, tc.params)
		}
	}
}

func TestBadPatternsPanic(t *testing.T) {
	for _, pattern := range []string{"/v2/{a...}/x/{b...}", "/v2/{a", "/other/x", "/v2/{a...}:s"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("pattern %q compiled", pattern)
				}
			}()
			(&API{Prefix: "/v2", Routes: []Route{{Method: "GET", Pattern: pattern}}}).Compile()
		}()
	}
}

func TestMuxServesTheMatch(t *testing.T) {
	var seen string
	api := (&API{Prefix: "/v2", Routes: []Route{{Method: "GET", Pattern: "/v2/{name...}/tags/list", Name: "tags",
		Handle: func(w http.ResponseWriter, r *http.Request, p Params) error {
			seen = From(r.Context()).Name() + " " + p["name"]
			return errors.New("boom")
		}}},
		Headers: map[string]string{"X-Api": "v2"},
		Error: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusTeapot)
			_, _ = w.Write([]byte(err.Error()))
		}}).Compile()
	mux := NewMux(nil, api)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/v2/team/app/tags/list", nil))
	if seen != "tags team/app" || rec.Code != http.StatusTeapot || rec.Body.String() != "boom" || rec.Header().Get("X-Api") != "v2" {
		t.Fatalf("seen %q, answer %d %q %v", seen, rec.Code, rec.Body.String(), rec.Header())
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/elsewhere", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("a path under no API: %d", rec.Code)
	}
}

// An API's repository parameter is checked once, when a route matches: an
// invalid name needs only credentials, never reaches the route's Need or
// handler, and is answered by the API's error writer.
func TestTheTableValidatesTheRepository(t *testing.T) {
	var handled, needed []string
	api := (&API{Prefix: "/v2", Repository: "name", Routes: []Route{{Method: "GET", Pattern: "/v2/{name...}/tags/list", Name: "tags",
		Need: func(r *http.Request, p Params) auth.Requirement {
			needed = append(needed, p["name"])
			return Repo("name", auth.ActionPull)(r, p)
		},
		Handle: func(w http.ResponseWriter, r *http.Request, p Params) error {
			handled = append(handled, p["name"])
			return nil
		}}},
		Error: func(w http.ResponseWriter, r *http.Request, err error) {
			if !errors.Is(err, oci.ErrNameInvalid) {
				t.Errorf("the API's error writer got %v, want a NAME_INVALID error", err)
			}
			w.WriteHeader(http.StatusBadRequest)
		}}).Compile()
	var requirements []auth.Requirement
	mux := NewMux(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requirements = append(requirements, From(r.Context()).Requirement(r))
			next.ServeHTTP(w, r)
		})
	}, api)

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/v2/Team/App/tags/list", nil))
	if rec.Code != http.StatusBadRequest || len(handled) != 0 || len(needed) != 0 {
		t.Fatalf("an invalid name: %d, handled %v, Need asked for %v", rec.Code, handled, needed)
	}
	if m := requirements[0]; !m.Authenticated || len(m.Accesses) != 0 || m.Public {
		t.Fatalf("an invalid name needs %+v, want credentials only", m)
	}

	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/v2/team/app/tags/list", nil))
	if rec.Code != http.StatusOK || !reflect.DeepEqual(handled, []string{"team/app"}) || !reflect.DeepEqual(needed, []string{"team/app"}) {
		t.Fatalf("a valid name: %d, handled %v, Need asked for %v", rec.Code, handled, needed)
	}
	if m := requirements[1]; len(m.Accesses) != 1 || m.Accesses[0].Name != "team/app" {
		t.Fatalf("a valid name needs %+v, want pull on team/app", m)
	}
}

// APIs that share a prefix (the server's own paths and the portal, both
// under /) are tried in order: the first with a route for the path takes
// it; a path none has a route for is the first one's to refuse, unless
// some API has the path with another method.
func TestAPIsUnderOnePrefixAreTriedInOrder(t *testing.T) {
	api := func(name string, routes ...Route) *API {
		for i := range routes {
			routes[i].Handle = func(w http.ResponseWriter, r *http.Request, p Params) error { return nil }
		}
		return (&API{Prefix: "", Routes: routes, NotFoundName: name + "_unknown", Error: func(http.ResponseWriter, *http.Request, error) {}}).Compile()
	}
	own := api("own", Route{Method: "GET", Pattern: "/healthz", Name: "healthz"})
	portal := api("portal", Route{Method: "GET", Pattern: "/", Name: "home"}, Route{Method: "POST", Pattern: "/login", Name: "login"})
	for _, c := range []struct{ method, path, want string }{
		{"GET", "/healthz", "healthz"},
		{"GET", "/", "home"},
		{"POST", "/login", "login"},
		{"GET", "/login", "portal_unknown"}, // the portal's: it has the path, with POST
		{"GET", "/nothing", "own_unknown"},
	} {
		m := From(Resolve([]*API{own, portal}, httptest.NewRequest(c.method, c.path, nil)).Context())
		if m.Name() != c.want {
			t.Errorf("%s %s: matched %s, want %s", c.method, c.path, m.Name(), c.want)
		}
	}
}
