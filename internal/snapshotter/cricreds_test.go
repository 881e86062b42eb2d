package snapshotter

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"oras.land/oras-go/v2/registry/remote/auth"
)

func TestPullCredentialsPersistEncrypted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "credentials")
	p := OpenPullCredentials(dir, "")
	if _, ok, err := p.Lookup("reg:5000", "team-a/app"); ok || err != nil {
		t.Fatalf("an empty store answers %v, %v", ok, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a store never written made its directory: %v", err)
	}
	secret := PullCredential{Username: "puller", Password: "s3cret-password-value"}
	if _, had, err := p.Put("reg:5000", "team-a/app", secret); had || err != nil {
		t.Fatalf("first Put: had %v, %v", had, err)
	}
	for _, name := range []string{pullCredentialsFile, nodeKeyFile} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, st.Mode().Perm())
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, pullCredentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("s3cret")) || bytes.Contains(b, []byte("puller")) || bytes.Contains(b, []byte("team-a")) {
		t.Errorf("the credentials file holds plain text: %q", b)
	}

	// Another process (the FUSE manager) reads what this one wrote, and
	// sees the next change.
	other := OpenPullCredentials(dir, "")
	got, ok, err := other.Lookup("reg:5000", "team-a/app")
	if err != nil || !ok || got.Username != "puller" || got.Password != secret.Password {
		t.Fatalf("another reader got %+v, %v, %v", got, ok, err)
	}
	if _, ok, _ := other.Lookup("reg:5000", "team-b/app"); ok {
		t.Error("another repository has the credentials")
	}
	if _, ok, _ := other.Lookup("other:5000", "team-a/app"); ok {
		t.Error("another registry has the credentials")
	}
	rotated := PullCredential{Username: "puller", Password: "rotated"}
	prev, had, err := p.Put("reg:5000", "team-a/app", rotated)
	if err != nil || !had || prev.Password != secret.Password {
		t.Fatalf("second Put: prev %+v, had %v, %v", prev, had, err)
	}
	if got, _, _ := other.Lookup("reg:5000", "team-a/app"); got.Password != "rotated" {
		t.Errorf("the other reader still has password %q after a change", got.Password)
	}
	if err := p.Restore("reg:5000", "team-a/app", rotated, prev, had); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := other.Lookup("reg:5000", "team-a/app"); got.Password != secret.Password {
		t.Errorf("after Restore the password is %q, want the one before", got.Password)
	}

	// A file encrypted with another node's key is refused, not misread.
	if err := os.WriteFile(filepath.Join(dir, nodeKeyFile), bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenPullCredentials(dir, "").Lookup("reg:5000", "team-a/app"); err == nil {
		t.Error("a file sealed with another key was read")
	}
}

func TestPullCredentialsKeyCreatedOnce(t *testing.T) {
	dir := t.TempDir()
	keys := make(chan []byte, 8)
	for range cap(keys) {
		go func() {
			k, err := createKey(filepath.Join(dir, "node.key"))
			if err != nil {
				t.Error(err)
			}
			keys <- k
		}()
	}
	first := <-keys
	for range cap(keys) - 1 {
		if k := <-keys; !bytes.Equal(k, first) {
			t.Fatal("processes creating the key at once ended with different keys")
		}
	}
}

func TestScopedCredential(t *testing.T) {
	p := OpenPullCredentials(t.TempDir(), "")
	if _, _, err := p.Put("reg:5000", "team-a/app", PullCredential{Username: "a", Password: "pa"}); err != nil {
		t.Fatal(err)
	}
	node := auth.StaticCredential("reg:5000", auth.Credential{Username: "node", Password: "pn"})
	cred := ScopedCredential(slog.New(slog.NewTextHandler(io.Discard, nil)), node, p)
	scoped := func(scopes ...string) context.Context {
		return auth.AppendScopesForHost(context.Background(), "reg:5000", scopes...)
	}
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		host     string
		wantUser string
	}{
		{"the repository pulled", scoped("repository:team-a/app:pull"), "reg:5000", "a"},
		{"another repository", scoped("repository:team-a/other:pull"), "reg:5000", "node"},
		{"a repository whose name extends it", scoped("repository:team-a/app/sub:pull"), "reg:5000", "node"},
		{"no scope", context.Background(), "reg:5000", "node"},
		{"two repositories", scoped("repository:team-a/app:pull", "repository:team-b/app:pull"), "reg:5000", "node"},
		{"another registry", auth.AppendScopesForHost(context.Background(), "other:5000", "repository:team-a/app:pull"), "other:5000", ""},
	} {
		got, err := cred(tc.ctx, tc.host)
		if err != nil || got.Username != tc.wantUser {
			t.Errorf("%s: got user %q (%v), want %q", tc.name, got.Username, err, tc.wantUser)
		}
	}
}

func TestRecordPull(t *testing.T) {
	p := OpenPullCredentials(t.TempDir(), "")
	var changed []string
	r := &PullRecorder{Credentials: p, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Changed: func(h, repo string) { changed = append(changed, h+"/"+repo) }}
	ctx := context.Background()
	lookup := func(host, repo string) PullCredential {
		c, _, err := p.Lookup(host, repo)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	done := r.RecordPull(ctx, "reg:5000/team-a/app:1", &runtimeapi.AuthConfig{Username: "u", Password: "p1"})
	if c := lookup("reg:5000", "team-a/app"); c.Password != "p1" {
		t.Fatalf("during the pull the repository has %+v", c)
	}
	done(nil)
	// A pull refused with new credentials puts the working ones back.
	done = r.RecordPull(ctx, "reg:5000/team-a/app@sha256:"+string(bytes.Repeat([]byte("a"), 64)), &runtimeapi.AuthConfig{Username: "u", Password: "wrong"})
	done(errors.New("401 Unauthorized"))
	if c := lookup("reg:5000", "team-a/app"); c.Password != "p1" {
		t.Errorf("after a failed pull the repository has password %q, want p1", c.Password)
	}
	// Docker's auth field, an identity token, a registry token.
	r.RecordPull(ctx, "reg:5000/team-b/app", &runtimeapi.AuthConfig{Auth: base64.StdEncoding.EncodeToString([]byte("b:pb"))})(nil)
	if c := lookup("reg:5000", "team-b/app"); c.Username != "b" || c.Password != "pb" {
		t.Errorf("auth field read as %+v", c)
	}
	r.RecordPull(ctx, "reg:5000/team-c/app", &runtimeapi.AuthConfig{IdentityToken: "refresh"})(nil)
	if c := lookup("reg:5000", "team-c/app"); c.IdentityToken != "refresh" || c.auth().RefreshToken != "refresh" {
		t.Errorf("identity token kept as %+v", c)
	}
	r.RecordPull(ctx, "reg:5000/team-d/app", &runtimeapi.AuthConfig{RegistryToken: "bearer"})(nil)
	if c := lookup("reg:5000", "team-d/app"); c.auth().AccessToken != "bearer" {
		t.Errorf("registry token kept as %+v", c)
	}
	// A server address of another registry, and no credentials at all,
	// keep nothing; docker.io's names are one registry.
	if done := r.RecordPull(ctx, "reg:5000/team-e/app", &runtimeapi.AuthConfig{Username: "e", Password: "pe", ServerAddress: "https://elsewhere:5000"}); done != nil {
		t.Error("credentials for another registry were kept")
	}
	if done := r.RecordPull(ctx, "reg:5000/team-e/app", nil); done != nil {
		t.Error("a pull without credentials did something")
	}
	r.RecordPull(ctx, "busybox", &runtimeapi.AuthConfig{Username: "h", Password: "ph", ServerAddress: "https://index.docker.io/v1/"})(nil)
	if c := lookup("docker.io", "library/busybox"); c.Username != "h" {
		t.Errorf("docker.io's library/busybox has %+v", c)
	}
	want := []string{"reg:5000/team-a/app", "reg:5000/team-a/app", "reg:5000/team-b/app", "reg:5000/team-c/app", "reg:5000/team-d/app", "docker.io/library/busybox"}
	if len(changed) != len(want) {
		t.Errorf("changes told: %v, want %v", changed, want)
	}
}
