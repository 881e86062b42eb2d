package snapshotter

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/trust"
)

// keyServer publishes a key set at /acr/v1/_keys, as a registry does.
type keyServer struct {
	mu   sync.Mutex
	keys trust.JWKS
	*httptest.Server
}

func newKeyServer(t *testing.T) *keyServer {
	ks := &keyServer{}
	ks.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/acr/v1/_keys" {
			http.NotFound(w, r)
			return
		}
		ks.mu.Lock()
		defer ks.mu.Unlock()
		if ks.keys.Keys == nil {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(ks.keys)
	}))
	t.Cleanup(ks.Close)
	return ks
}

func (ks *keyServer) publish(keys ...trust.JWK) {
	ks.mu.Lock()
	ks.keys = trust.JWKS{Keys: keys}
	ks.mu.Unlock()
}

func (ks *keyServer) host() string { return strings.TrimPrefix(ks.URL, "http://") }

func genKey(t *testing.T) (*ecdsa.PrivateKey, trust.JWK) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	j, err := trust.NewJWK(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return k, j
}

func isReason(err error, reason string) bool {
	var ns *notStreamable
	return errors.As(err, &ns) && ns.reason == reason
}

func TestTrustPinsAtFirstUseAndFollowsRotations(t *testing.T) {
	srv := newKeyServer(t)
	dir := t.TempDir()
	tr := NewTrust(dir, func(string) (string, []string) { return TrustRegistry, nil }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	c := client.New(srv.host(), client.Options{PlainHTTP: true})
	ctx := context.Background()

	// A registry that publishes no keys streams nothing.
	if _, err := tr.Keys(ctx, c, true); !isReason(err, "untrusted") {
		t.Fatalf("no published keys: %v, want untrusted", err)
	}

	first, firstJWK := genKey(t)
	srv.publish(firstJWK)
	keys, err := tr.Keys(ctx, c, true)
	if err != nil || len(keys) != 1 || keys[firstJWK.Kid] == nil {
		t.Fatalf("first use: %v %v", keys.IDs(), err)
	}
	if pins, err := ReadPins(dir, srv.host()); err != nil || len(pins.Keys) != 1 {
		t.Fatalf("pins after first use: %v %v", pins, err)
	}

	// A rotation: the new key is endorsed by the pinned one.
	second, secondJWK := genKey(t)
	secondJWK.Endorsement, err = trust.Endorse(first, firstJWK.Kid, &second.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	srv.publish(firstJWK, secondJWK)
	if keys, err := tr.Keys(ctx, c, true); err != nil || len(keys) != 2 {
		t.Fatalf("after a rotation: %v %v, want both keys", keys.IDs(), err)
	}
	// The old key withdrawn: the new one stays trusted.
	srv.publish(secondJWK)
	if keys, err := tr.Keys(ctx, c, true); err != nil || len(keys) != 1 || keys[secondJWK.Kid] == nil {
		t.Fatalf("old key withdrawn: %v %v", keys.IDs(), err)
	}

	// A key set replaced wholesale is refused until an operator pins it.
	_, strangerJWK := genKey(t)
	srv.publish(strangerJWK)
	_, err = tr.Keys(ctx, c, true)
	if !isReason(err, "untrusted") || !strings.Contains(err.Error(), "sluice-snapshotter trust "+srv.host()) {
		t.Fatalf("replaced key set: %v, want untrusted with the command to run", err)
	}
	if err := WritePins(dir, srv.host(), trust.JWKS{Keys: []trust.JWK{strangerJWK}}); err != nil {
		t.Fatal(err)
	}
	if keys, err := tr.Keys(ctx, c, true); err != nil || keys[strangerJWK.Kid] == nil {
		t.Fatalf("after pinning again: %v %v", keys.IDs(), err)
	}
}

// A rotation is pinned once: the pull that sees it writes the pin file
// before it returns, and later lookups take the pins from memory instead
// of reading the file back, finding the new key again and rewriting it.
func TestTrustPinsARotationOnce(t *testing.T) {
	srv := newKeyServer(t)
	dir := t.TempDir()
	var logs bytes.Buffer
	tr := NewTrust(dir, func(string) (string, []string) { return TrustRegistry, nil }, slog.New(slog.NewTextHandler(&logs, nil)))
	c := client.New(srv.host(), client.Options{PlainHTTP: true})
	ctx := context.Background()

	first, firstJWK := genKey(t)
	srv.publish(firstJWK)
	if _, err := tr.Keys(ctx, c, true); err != nil {
		t.Fatal(err)
	}
	second, secondJWK := genKey(t)
	var err error
	secondJWK.Endorsement, err = trust.Endorse(first, firstJWK.Kid, &second.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	srv.publish(firstJWK, secondJWK)
	if keys, err := tr.Keys(ctx, c, true); err != nil || len(keys) != 2 {
		t.Fatalf("after a rotation: %v %v, want both keys", keys.IDs(), err)
	}
	if pins, err := ReadPins(dir, srv.host()); err != nil || len(pins.Keys) != 2 {
		t.Fatalf("pins when the rotation's pull returns: %v %v, want both keys", pins, err)
	}
	written, err := os.Stat(pinPath(dir, srv.host()))
	if err != nil {
		t.Fatal(err)
	}

	for i := 0; i < 3; i++ {
		if keys, err := tr.Keys(ctx, c, true); err != nil || len(keys) != 2 {
			t.Fatalf("lookup %d after the rotation: %v %v", i, keys.IDs(), err)
		}
	}
	if n := strings.Count(logs.String(), "rotated its signing key"); n != 1 {
		t.Errorf("the rotation was logged %d times, want once:\n%s", n, logs.String())
	}
	// The file is replaced by a rename when written, so a rewrite would
	// show as another file.
	if now, err := os.Stat(pinPath(dir, srv.host())); err != nil || !os.SameFile(written, now) {
		t.Errorf("the pin file was written again after the rotation: %v", err)
	}
}

func TestTrustModes(t *testing.T) {
	srv := newKeyServer(t)
	_, published := genKey(t)
	srv.publish(published)
	ciKey, ciJWK := genKey(t)
	pem, err := trust.PublicPEM(&ciKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "ci.pub")
	if err := os.WriteFile(keyFile, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	c := client.New(srv.host(), client.Options{PlainHTTP: true})
	for _, tc := range []struct {
		mode    string
		files   []string
		want    []string // key ids; nil with wantErr
		wantErr bool
		anyKeys bool
	}{
		{mode: TrustKeys, files: []string{keyFile}, want: []string{ciJWK.Kid}},
		{mode: TrustNone, wantErr: true},
		{mode: TrustAny, anyKeys: true},
	} {
		tr := NewTrust(t.TempDir(), func(string) (string, []string) { return tc.mode, tc.files }, slog.New(slog.NewTextHandler(io.Discard, nil)))
		keys, err := tr.Keys(context.Background(), c, false)
		switch {
		case tc.wantErr:
			if !isReason(err, "untrusted") {
				t.Errorf("%s: %v, want untrusted", tc.mode, err)
			}
		case tc.anyKeys:
			if err != nil || keys != nil {
				t.Errorf("%s: %v %v, want no keys needed", tc.mode, keys, err)
			}
		default:
			if err != nil || strings.Join(keys.IDs(), ",") != strings.Join(tc.want, ",") {
				t.Errorf("%s: %v %v, want %v", tc.mode, keys.IDs(), err, tc.want)
			}
		}
	}
}

func TestTrustConfigIsValidated(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"registries:\n  r:\n    trust: maybe\n", "use registry, keys, none or any"},
		{"registries:\n  r:\n    trust: keys\n", "needs trustKeys"},
		{"registries:\n  r:\n    trustKeys: [a.pem]\n", "only with trust: keys"},
	} {
		path := filepath.Join(t.TempDir(), "c.yaml")
		_ = os.WriteFile(path, []byte(tc.yaml), 0o600)
		if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
