package token

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/metadata"
)

// fuzzGate is the gate in front of a push route, and the token endpoints,
// of a token service with an admin, for the fuzz targets.
type fuzzGate struct {
	svc     *auth.Service
	mux     http.Handler
	keyDir  string
	reached bool
}

func newFuzzGate(f *testing.F) *fuzzGate {
	dir := f.TempDir()
	meta, err := metadata.OpenSQLite(context.Background(), filepath.Join(dir, "db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { meta.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	g := &fuzzGate{keyDir: filepath.Join(dir, "keys")}
	g.svc, err = auth.NewService(context.Background(), meta, auth.Options{AdminPassword: "the-admin-password", KeyDir: g.keyDir, FailedLoginBurst: 1 << 30}, log)
	if err != nil {
		f.Fatal(err)
	}
	protected := &route.API{Prefix: "/v2", Routes: []route.Route{{Method: "POST", Pattern: "/v2/{name...}/blobs/uploads/", Name: "uploads",
		Need: route.Repo("name", auth.ActionPush),
		Handle: func(http.ResponseWriter, *http.Request, route.Params) error {
			g.reached = true
			return nil
		}}}}
	g.mux = route.NewMux(NewGate(g.svc, Options{}, log).Wrap, protected.Compile(), New(g.svc, Options{}, log).API())
	return g
}

// upload asks to push to app with the Authorization header given: whether
// the request reached the handler, and the status.
func (g *fuzzGate) upload(header string) (reached bool, code int) {
	g.reached = false
	req := httptest.NewRequest("POST", "/v2/app/blobs/uploads/", nil)
	req.Header.Set("Authorization", header)
	rec := httptest.NewRecorder()
	g.mux.ServeHTTP(rec, req)
	return g.reached, rec.Code
}

// signingKey is the service's current signing key and its id.
func (g *fuzzGate) signingKey(f *testing.F) (*ecdsa.PrivateKey, string) {
	kid, err := os.ReadFile(filepath.Join(g.keyDir, "current"))
	if err != nil {
		f.Fatal(err)
	}
	pemBytes, err := os.ReadFile(filepath.Join(g.keyDir, strings.TrimSpace(string(kid))+".pem"))
	if err != nil {
		f.Fatal(err)
	}
	key, err := jwt.ParseECPrivateKeyFromPEM(pemBytes)
	if err != nil {
		f.Fatal(err)
	}
	return key, strings.TrimSpace(string(kid))
}

// FuzzAuthorizationHeader feeds arbitrary Authorization headers to the gate
// and the token endpoint: they must answer 401 (or 400/429), never let the
// request through, and never fail.
func FuzzAuthorizationHeader(f *testing.F) {
	for _, s := range []string{"Basic YWRtaW46eA==", "Bearer abc.def.ghi", "Bearer ", "Basic", "basic !!!", "Digest x", "Bearer eyJhbGciOiJub25lIn0.e30.", ""} {
		f.Add(s)
	}
	g := newFuzzGate(f)
	f.Fuzz(func(t *testing.T, header string) {
		reached, code := g.upload(header)
		if reached || (code != 401 && code != 429) {
			t.Fatalf("header %q: reached=%v status %d", header, reached, code)
		}
		req := httptest.NewRequest("GET", "/oauth2/token?scope=repository:app:push", nil)
		req.Header.Set("Authorization", header)
		rec := httptest.NewRecorder()
		g.mux.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("token endpoint, header %q: status %d", header, rec.Code)
		}
	})
}

// FuzzBearerClaims signs arbitrary claims with the registry's own key, as
// only a flaw in the token service could, and sends them as a bearer
// token: the request may pass only if the claims, read as the JSON they
// are, make an access token of this service, unexpired, granting push on
// the repository; the refresh endpoint, given them, never fails.
func FuzzBearerClaims(f *testing.F) {
	future, past := time.Now().Add(time.Hour).Unix(), time.Now().Add(-time.Minute).Unix()
	for _, s := range []string{
		fmt.Sprintf(`{"iss":"sluice-token-service","sub":"admin","aud":["example.com"],"exp":%d,"iat":%d,"typ":"access","access":[{"type":"repository","name":"app","actions":["pull","push"]}]}`, future, past),
		fmt.Sprintf(`{"iss":"sluice-token-service","sub":"admin","aud":"example.com","exp":%d,"iat":%d,"typ":"refresh"}`, future, past),
		fmt.Sprintf(`{"iss":"sluice-token-service","sub":"t","aud":["example.com"],"exp":%d,"typ":"access","idk":"token","pwd":"password1","pwc":1,"access":[{"type":"repository","name":"app","actions":["*"]}]}`, future),
		fmt.Sprintf(`{"iss":"sluice-token-service","aud":["other"],"exp":%d,"typ":"access","access":[{"type":"repository","name":"app","actions":["push"]}]}`, future),
		`{"exp":"soon","access":{}}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s), true)
	}
	gate := newFuzzGate(f)
	key, kid := gate.signingKey(f)
	sign := func(t testing.TB, claims []byte, withKid bool) string {
		header := map[string]any{"alg": "ES256", "typ": "JWT"}
		if withKid {
			header["kid"] = kid
		}
		hb, _ := json.Marshal(header)
		signing := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(claims)
		sig, err := jwt.SigningMethodES256.Sign(signing, key)
		if err != nil {
			t.Fatal(err)
		}
		return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	// The harness can let a request through: the first seed is a good token.
	good := fmt.Sprintf(`{"iss":"sluice-token-service","sub":"admin","aud":["example.com"],"exp":%d,"iat":%d,"typ":"access","access":[{"type":"repository","name":"app","actions":["push"]}]}`, future, past)
	if reached, code := gate.upload("Bearer " + sign(f, []byte(good), true)); !reached {
		f.Fatalf("a well-formed token does not pass: %d", code)
	}
	f.Fuzz(func(t *testing.T, claims []byte, withKid bool) {
		token := sign(t, claims, withKid)
		reached, code := gate.upload("Bearer " + token)
		if code >= 500 {
			t.Fatalf("claims %q: status %d", claims, code)
		}
		if reached {
			if why := grantsPush(claims, "example.com", time.Now()); why != "" {
				t.Fatalf("claims %q let a push through: %s", claims, why)
			}
		}
		req := httptest.NewRequest("POST", "/oauth2/exchange", strings.NewReader(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}, "service": {"example.com"}, "scope": {"repository:app:push"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		gate.mux.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("exchange of claims %q: status %d", claims, rec.Code)
		}
	})
}

// grantsPush says why claims do not make a token that may push to app at
// now, or "" when they do.
func grantsPush(claims []byte, audience string, now time.Time) string {
	var c struct {
		Iss    string          `json:"iss"`
		Aud    json.RawMessage `json:"aud"`
		Exp    *float64        `json:"exp"`
		Typ    string          `json:"typ"`
		Access []auth.Access   `json:"access"`
	}
	if err := json.Unmarshal(claims, &c); err != nil {
		return fmt.Sprintf("not a JSON object of claims: %v", err)
	}
	var auds []string
	if json.Unmarshal(c.Aud, &auds) != nil {
		var one string
		_ = json.Unmarshal(c.Aud, &one)
		auds = []string{one}
	}
	switch {
	case c.Iss != "sluice-token-service":
		return "issuer " + c.Iss
	case !slices.Contains(auds, audience):
		return "audience " + string(c.Aud)
	case c.Exp == nil || *c.Exp < float64(now.Add(-time.Minute).Unix()):
		return "no expiry, or expired"
	case c.Typ != "access":
		return "kind " + c.Typ
	}
	for _, a := range c.Access {
		if a.Type == "repository" && a.Name == "app" && (slices.Contains(a.Actions, "push") || slices.Contains(a.Actions, "*")) {
			return ""
		}
	}
	return "no push access to app"
}

// FuzzTokenRequest sends arbitrary token requests without credentials
// (query of GET /oauth2/token, form of POST /oauth2/token and
// /oauth2/exchange): none fails, and a token issued to nobody grants
// nothing (anonymous pull is off).
func FuzzTokenRequest(f *testing.F) {
	for _, s := range []string{"scope=repository:app:push&service=example.com", "grant_type=password&username=admin&password=x&service=example.com",
		"grant_type=refresh_token&refresh_token=a.b.c&scope=repository:app:pull", "scope=registry:catalog:*&scope=repository:a/b:pull,push&offline_token=true",
		"grant_type=access_token&access_token=x", "%zz", "scope=repository(plugin):x:pull&account=admin"} {
		f.Add(s)
	}
	gate := newFuzzGate(f)
	f.Fuzz(func(t *testing.T, q string) {
		for _, req := range []*http.Request{
			httptest.NewRequest("GET", "/oauth2/token?"+url.PathEscape(q), nil),
			httptest.NewRequest("GET", "/oauth2/token", nil),
			formRequest("/oauth2/token", q),
			formRequest("/oauth2/exchange", q),
		} {
			if req.Method == "GET" && req.URL.RawQuery == "" {
				req.URL.RawQuery = q
			}
			rec := httptest.NewRecorder()
			gate.mux.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s %s %q: status %d", req.Method, req.URL.Path, q, rec.Code)
			}
			if rec.Code != 200 {
				continue
			}
			var resp struct{ Token, AccessToken string }
			_ = json.Unmarshal(rec.Body.Bytes(), &resp)
			tok := cmp.Or(resp.Token, resp.AccessToken)
			if tok == "" {
				continue
			}
			claims, err := gate.svc.VerifyAccess(context.Background(), tok, "example.com")
			if err == nil && len(claims.Access) > 0 {
				t.Fatalf("%s %s %q: a token with %v for a caller without credentials", req.Method, req.URL.Path, q, claims.Access)
			}
		}
	})
}

func formRequest(path, body string) *http.Request {
	req := httptest.NewRequest("POST", path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}
