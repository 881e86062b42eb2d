package token

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/metadata"
)

// FuzzAuthorizationHeader feeds arbitrary Authorization headers to the gate
// and the token endpoint: they must answer 401 (or 400/429), never let the
// request through, and never fail.
func FuzzAuthorizationHeader(f *testing.F) {
	for _, s := range []string{"Basic YWRtaW46eA==", "Bearer abc.def.ghi", "Bearer ", "Basic", "basic !!!", "Digest x", "Bearer eyJhbGciOiJub25lIn0.e30.", ""} {
		f.Add(s)
	}
	dir := f.TempDir()
	meta, err := metadata.OpenSQLite(context.Background(), filepath.Join(dir, "db"))
	if err != nil {
		f.Fatal(err)
	}
	defer meta.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := auth.NewService(context.Background(), meta, auth.Options{AdminPassword: "the-admin-password", KeyDir: filepath.Join(dir, "keys"), FailedLoginBurst: 1 << 30}, log)
	if err != nil {
		f.Fatal(err)
	}
	reached := false
	protected := &route.API{Prefix: "/v2", Routes: []route.Route{{Method: "POST", Pattern: "/v2/{name...}/blobs/uploads/", Name: "uploads",
		Need: route.Repo("name", auth.ActionPush),
		Handle: func(http.ResponseWriter, *http.Request, route.Params) error {
			reached = true
			return nil
		}}}}
	mux := route.NewMux(NewGate(svc, Options{}, log).Wrap, protected.Compile(), New(svc, Options{}, log).API())
	f.Fuzz(func(t *testing.T, header string) {
		reached = false
		req := httptest.NewRequest("POST", "/v2/app/blobs/uploads/", nil)
		req.Header.Set("Authorization", header)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if reached || (rec.Code != 401 && rec.Code != 429) {
			t.Fatalf("header %q: reached=%v status %d", header, reached, rec.Code)
		}
		req = httptest.NewRequest("GET", "/oauth2/token?scope=repository:app:push", nil)
		req.Header.Set("Authorization", header)
		rec = httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("token endpoint, header %q: status %d", header, rec.Code)
		}
	})
}
