package snapshotter

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestReloadingCredential rotates a node token's password in the config
// file and in a password file, and expects the next lookup to see it; a
// config file broken by an edit keeps the last good credentials.
func TestReloadingCredential(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", filepath.Join(dir, "docker")) // no docker credentials
	path := filepath.Join(dir, "snapshotter.yaml")
	pwFile := filepath.Join(dir, "other.password")
	write := func(p, body string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		// Make the change visible even within the file system's time
		// resolution.
		later := time.Now().Add(time.Duration(len(body)) * time.Second)
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	write(pwFile, "first-file\n")
	write(path, "registries:\n  reg.example:\n    username: node\n    password: first\n  other.example:\n    username: node2\n    passwordFile: "+pwFile+"\n")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	cred := ReloadingCredential(path, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	check := func(host, user, password string) {
		t.Helper()
		c, err := cred(context.Background(), host)
		if err != nil || c.Username != user || c.Password != password {
			t.Fatalf("credentials of %s: %+v, %v; want %s/%s", host, c, err, user, password)
		}
	}
	check("reg.example", "node", "first")
	check("other.example", "node2", "first-file")
	check("unknown.example", "", "")

	write(path, "registries:\n  reg.example:\n    username: node\n    password: second-password\n  other.example:\n    username: node2\n    passwordFile: "+pwFile+"\n")
	check("reg.example", "node", "second-password")
	write(pwFile, "second-file\n")
	check("other.example", "node2", "second-file")

	write(path, "registries: [this is not a map\n")
	check("reg.example", "node", "second-password")
}
