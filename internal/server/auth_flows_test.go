package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sluicehq/sluice/internal/config"
)

func TestBearerTokensAreVerified(t *testing.T) {
	ar := newAuthRegistry(t, nil)
	service := strings.TrimPrefix(ar.ts.URL, "http://")
	good, _ := ar.bearer("admin", adminPassword, "repository:team-a/app:pull")
	pull := func(tok string) int {
		return ar.do("GET", "/v2/team-a/app/manifests/v1", map[string]string{"Authorization": "Bearer " + tok}, nil).code
	}
	if code := pull(good); code != 200 {
		t.Fatalf("valid token: %d", code)
	}
	parts := strings.Split(good, ".")
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	// Tampered claims: widen the access; the signature no longer matches.
	tampered := bytes.Replace(claims, []byte(`"pull"`), []byte(`"pull","push"`), 1)
	// A token signed by a key the registry does not know.
	foreignKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sign := func(c jwt.MapClaims, key any, method jwt.SigningMethod) string {
		tok := jwt.NewWithClaims(method, c)
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var original map[string]any
	_ = json.Unmarshal(claims, &original)
	withClaims := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{}
		for k, v := range original {
			c[k] = v
		}
		change(c)
		return c
	}
	cases := map[string]string{
		"tampered":       parts[0] + "." + base64.RawURLEncoding.EncodeToString(tampered) + "." + parts[2],
		"no signature":   parts[0] + "." + parts[1] + ".",
		"foreign key":    sign(withClaims(func(jwt.MapClaims) {}), foreignKey, jwt.SigningMethodES256),
		"alg none":       sign(withClaims(func(jwt.MapClaims) {}), jwt.UnsafeAllowNoneSignatureType, jwt.SigningMethodNone),
		"garbage":        "not-a-jwt",
		"hmac with none": sign(withClaims(func(jwt.MapClaims) {}), []byte("secret"), jwt.SigningMethodHS256),
	}
	for name, tok := range cases {
		if code := pull(tok); code != 401 {
			t.Errorf("%s token: %d, want 401", name, code)
		}
	}
	// Expired, future and wrong-audience tokens signed with the registry's
	// own key are refused too.
	kid, key := ar.srv.Auth.SigningKeyForTest()
	own := func(change func(jwt.MapClaims)) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, withClaims(change))
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if code := pull(own(func(jwt.MapClaims) {})); code != 200 {
		t.Fatalf("re-signed original claims: %d", code)
	}
	now := time.Now()
	for name, change := range map[string]func(jwt.MapClaims){
		"expired": func(c jwt.MapClaims) {
			c["exp"] = now.Add(-time.Hour).Unix()
			c["iat"] = now.Add(-2 * time.Hour).Unix()
		},
		"not yet valid":     func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() },
		"wrong audience":    func(c jwt.MapClaims) { c["aud"] = []string{"other.registry.example"} },
		"wrong issuer":      func(c jwt.MapClaims) { c["iss"] = "someone-else" },
		"refresh as access": func(c jwt.MapClaims) { c["typ"] = "refresh" },
		"no expiry":         func(c jwt.MapClaims) { delete(c, "exp") },
	} {
		if code := pull(own(change)); code != 401 {
			t.Errorf("%s token: %d, want 401", name, code)
		}
	}
	_ = service
}

func TestRefreshTokens(t *testing.T) {
	ar := newAuthRegistry(t, nil)
	pass := ar.createToken("ci-bot", "_repositories_pull")
	service := strings.TrimPrefix(ar.ts.URL, "http://")
	post := func(path string, form url.Values) (int, map[string]any) {
		r := ar.do("POST", path, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, []byte(form.Encode()))
		var v map[string]any
		_ = json.Unmarshal([]byte(r.body), &v)
		return r.code, v
	}
	code, v := post("/oauth2/token", url.Values{"grant_type": {"password"}, "username": {"ci-bot"}, "password": {pass}, "service": {service}, "scope": {"repository:team-a/app:pull repository:team-a/app:push"}})
	if code != 200 || v["access_token"] == "" || v["refresh_token"] == nil || v["expires_in"].(float64) < 60 {
		t.Fatalf("password grant: %d %v", code, v)
	}
	// The intersection of asked and allowed: pull, not push.
	if v["scope"] != "repository:team-a/app:pull" {
		t.Fatalf("granted scope %v", v["scope"])
	}
	refresh := v["refresh_token"].(string)
	code, v = post("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "service": {service}, "scope": {"repository:team-b/app:pull"}})
	if code != 200 || v["access_token"] == "" {
		t.Fatalf("refresh grant: %d %v", code, v)
	}
	if r := ar.do("GET", "/v2/team-b/app/manifests/v1", map[string]string{"Authorization": "Bearer " + v["access_token"].(string)}, nil); r.code != 200 {
		t.Fatalf("pull with refreshed token: %d", r.code)
	}
	code, v = post("/oauth2/exchange", url.Values{"grant_type": {"password"}, "username": {"ci-bot"}, "password": {pass}, "service": {service}})
	if code != 200 || v["refresh_token"] == nil || v["access_token"] != nil {
		t.Fatalf("exchange: %d %v", code, v)
	}
	// An access token is not a refresh token.
	code, _ = post("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"not.a.token"}, "service": {service}})
	if code != 401 {
		t.Fatalf("garbage refresh token: %d", code)
	}
	// Regenerating the password revokes refresh tokens issued for it.
	if r := ar.do("POST", "/acr/v1/_tokens/ci-bot/_credentials", basic("admin", adminPassword), []byte(`{"name":"password1"}`)); r.code != 200 {
		t.Fatalf("regenerate: %d %s", r.code, r.body)
	}
	code, _ = post("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "service": {service}})
	if code != 401 {
		t.Fatalf("refresh after regeneration: %d, want 401", code)
	}
	// Another service is refused.
	code, _ = post("/oauth2/token", url.Values{"grant_type": {"password"}, "username": {"ci-bot"}, "password": {pass}, "service": {"evil.example"}})
	if code != 400 {
		t.Fatalf("other service: %d", code)
	}
	code, _ = post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}})
	if code != 400 {
		t.Fatalf("unsupported grant: %d", code)
	}
}

func TestCatalogListsOnlyReadableRepositories(t *testing.T) {
	ar := newAuthRegistry(t, nil)
	if r := ar.do("POST", "/acr/v1/_scopemaps", basic("admin", adminPassword), []byte(`{"name":"team-a-read","actions":["repositories/team-a/*/content/read"]}`)); r.code != 201 {
		t.Fatalf("scope map: %d %s", r.code, r.body)
	}
	pass := ar.createToken("team-a-reader", "team-a-read")
	for _, path := range []string{"/v2/_catalog", "/acr/v1/_catalog"} {
		r := ar.do("GET", path, basic("team-a-reader", pass), nil)
		if r.code != 200 || !strings.Contains(r.body, `"team-a/app"`) || strings.Contains(r.body, "team-b") {
			t.Fatalf("%s for team-a reader: %d %s", path, r.code, r.body)
		}
		tok, _ := ar.bearer("team-a-reader", pass, "registry:catalog:*")
		r = ar.do("GET", path, map[string]string{"Authorization": "Bearer " + tok}, nil)
		if r.code != 200 || strings.Contains(r.body, "team-b") || !strings.Contains(r.body, "team-a/app") {
			t.Fatalf("%s with a bearer token: %d %s", path, r.code, r.body)
		}
	}
	if r := ar.do("GET", "/v2/_catalog", basic("admin", adminPassword), nil); !strings.Contains(r.body, "team-b/app") {
		t.Fatalf("admin catalog: %s", r.body)
	}
}

func TestAnonymousPull(t *testing.T) {
	ar := newAuthRegistry(t, func(c *config.Config) { c.Auth.AnonymousPull = true })
	// Docker clients take the challenge, fetch an anonymous token, retry.
	r := ar.do("GET", "/v2/team-a/app/manifests/v1", nil, nil)
	if r.code != 200 {
		t.Fatalf("anonymous pull: %d", r.code)
	}
	tok, code := ar.bearer("", "", "repository:team-a/app:pull,push")
	if code != 200 {
		t.Fatalf("anonymous token: %d", code)
	}
	if r := ar.do("GET", "/v2/team-a/app/manifests/v1", map[string]string{"Authorization": "Bearer " + tok}, nil); r.code != 200 {
		t.Fatalf("pull with anonymous token: %d", r.code)
	}
	if r := ar.do("POST", "/v2/team-a/app/blobs/uploads/", map[string]string{"Authorization": "Bearer " + tok}, nil); r.code != 401 {
		t.Fatalf("push with anonymous token: %d", r.code)
	}
	if r := ar.do("POST", "/v2/team-a/app/blobs/uploads/", nil, nil); r.code != 401 {
		t.Fatalf("anonymous push: %d", r.code)
	}
	if r := ar.do("GET", "/acr/v1/team-a/app", nil, nil); r.code != 401 {
		t.Fatalf("anonymous metadata read: %d", r.code)
	}
}

func TestFailedLoginsAreLimited(t *testing.T) {
	var logs bytes.Buffer
	cfg := config.Default()
	cfg.Data = t.TempDir()
	cfg.AdminPassword = adminPassword
	cfg.Auth.FailedLoginBurst = 3
	cfg.Auth.FailedLoginRefill = config.Duration(time.Hour)
	srv, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ts := newTestServer(srv)
	defer ts.Close()
	ar := &authRegistry{t: t, srv: srv, ts: ts}
	for i := range 3 {
		if r := ar.do("GET", "/v2/", basic("admin", "wrong-guess-number"), nil); r.code != 401 {
			t.Fatalf("failure %d: %d", i, r.code)
		}
	}
	if r := ar.do("GET", "/v2/", basic("admin", "wrong-guess-number"), nil); r.code != 429 || r.header.Get("Retry-After") == "" {
		t.Fatalf("after the burst: %d", r.code)
	}
	// Even the right password waits now: guessing cannot continue.
	if r := ar.do("GET", "/v2/", basic("admin", adminPassword), nil); r.code != 429 {
		t.Fatalf("right password during the lockout: %d", r.code)
	}
	if !strings.Contains(logs.String(), "login failed") || strings.Contains(logs.String(), "wrong-guess-number") || strings.Contains(logs.String(), adminPassword) {
		t.Fatalf("failed logins must be logged without secrets:\n%s", logs.String())
	}
}

// Wrong passwords from one address hold back that user name from that
// address only: another identity behind the same address (loopback, a NAT,
// a CI runner) and the same identity from another address log in, and the
// refusal's Retry-After is the real wait, not a minute.
func TestFailedLoginsLimitedPerUserAndAddress(t *testing.T) {
	// The default burst; a refill long enough that no token comes back
	// while bcrypt checks ten passwords under the race detector.
	const refill = time.Hour
	ar := newAuthRegistry(t, func(c *config.Config) { c.Auth.FailedLoginRefill = config.Duration(refill) })
	pullPass := ar.createToken("ci-pull", "_repositories_pull")
	from := func(ip, user, pass string) *http.Response {
		t.Helper()
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		client := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
		defer client.CloseIdleConnections()
		req, _ := http.NewRequest("GET", ar.ts.URL+"/oauth2/token?service="+strings.TrimPrefix(ar.ts.URL, "http://"), nil)
		req.SetBasicAuth(user, pass)
		r, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r
	}

	start := time.Now()
	var refused *http.Response
	for i := range 20 {
		r := from("127.0.0.1", "admin", "wrong-guess-number")
		if want := map[bool]int{true: 401, false: 429}[i < 10]; r.StatusCode != want {
			t.Fatalf("wrong password %d: %d, want %d", i+1, r.StatusCode, want)
		}
		refused = r
	}
	// The bucket began to refill at the first failure, at most this long
	// ago: the wait left is the refill less that, rounded up.
	elapsed := time.Since(start)
	retry, err := strconv.Atoi(refused.Header.Get("Retry-After"))
	if lowest := int(math.Ceil((refill - elapsed).Seconds())); err != nil || retry < lowest || retry > int(refill.Seconds()) {
		t.Fatalf("Retry-After %q after %v; want the wait left of %v, rounded up", refused.Header.Get("Retry-After"), elapsed, refill)
	}
	if r := from("127.0.0.1", "admin", adminPassword); r.StatusCode != 429 {
		t.Fatalf("the guessed identity from the guessing address: %d, want 429", r.StatusCode)
	}
	if r := from("127.0.0.1", "ci-pull", pullPass); r.StatusCode != 200 {
		t.Fatalf("another identity behind the same address: %d, want 200", r.StatusCode)
	}
	if r := from("127.0.0.2", "admin", adminPassword); r.StatusCode != 200 {
		t.Fatalf("the same identity from another address: %d, want 200", r.StatusCode)
	}
}

func TestGeneratedAdminPassword(t *testing.T) {
	cfg := config.Default()
	cfg.Data = t.TempDir()
	out, restore := captureStderr(t)
	srv, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	restore()
	if err != nil {
		t.Fatal(err)
	}
	printed := string(out())
	i := strings.Index(printed, "\n\n    ")
	if i < 0 {
		t.Fatalf("no generated password printed: %q", printed)
	}
	pass := strings.TrimSpace(printed[i:])
	ts := newTestServer(srv)
	ar := &authRegistry{t: t, srv: srv, ts: ts}
	if r := ar.do("GET", "/v2/", basic("admin", pass), nil); r.code != 200 {
		t.Fatalf("generated password does not log in: %d", r.code)
	}
	ts.Close()
	srv.Close()
	// Stored only as a hash.
	db, _ := os.ReadFile(filepath.Join(cfg.Data, "sluice.db"))
	wal, _ := os.ReadFile(filepath.Join(cfg.Data, "sluice.db-wal"))
	if bytes.Contains(db, []byte(pass)) || bytes.Contains(wal, []byte(pass)) {
		t.Fatal("admin password stored in clear")
	}
	// Printed once: a second start prints nothing.
	out, restore = captureStderr(t)
	srv, err = New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	restore()
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if strings.Contains(string(out()), "Generated password") {
		t.Fatal("password printed again on the second start")
	}
}

func TestKeyRotationKeepsIssuedTokensValid(t *testing.T) {
	ar := newAuthRegistry(t, nil)
	before, _ := ar.bearer("admin", adminPassword, "repository:team-a/app:pull")
	if _, err := ar.srv.Auth.RotateKeys(); err != nil {
		t.Fatal(err)
	}
	after, _ := ar.bearer("admin", adminPassword, "repository:team-a/app:pull")
	for name, tok := range map[string]string{"before": before, "after": after} {
		if r := ar.do("GET", "/v2/team-a/app/manifests/v1", map[string]string{"Authorization": "Bearer " + tok}, nil); r.code != 200 {
			t.Fatalf("token issued %s rotation: %d", name, r.code)
		}
	}
	if len(ar.srv.Auth.KeyIDs()) != 2 {
		t.Fatalf("keys %v", ar.srv.Auth.KeyIDs())
	}
}

func TestTLSRealmUsesTheAddressReached(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir)
	cfg := config.Default()
	cfg.Data = t.TempDir()
	cfg.AdminPassword = adminPassword
	cfg.TLS.Cert, cfg.TLS.Key = certFile, keyFile
	srv, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		<-done
	}()
	pem, _ := os.ReadFile(certFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	addr := "https://" + ln.Addr().String()
	var resp *http.Response
	for i := 0; i < 200; i++ {
		if resp, err = client.Get(addr + "/v2/"); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := `Bearer realm="` + addr + `/oauth2/token",service="` + ln.Addr().String() + `"`
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != want {
		t.Fatalf("over TLS: %d %q, want %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), want)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}
