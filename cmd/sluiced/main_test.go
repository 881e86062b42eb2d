package main

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain runs sluiced itself when a test starts this binary with
// SLUICED_TEST_MAIN=1, so that a test sees its exit and its stderr.
func TestMain(m *testing.M) {
	if os.Getenv("SLUICED_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// An address in use fails sluiced serve before it makes anything: no data
// directory, no database, no "shown once" admin password that would never
// be shown again.
func TestServeAddressInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	data := filepath.Join(t.TempDir(), "data")

	cmd := exec.Command(os.Args[0], "serve", "--listen", addr, "--data", data)
	cmd.Env = []string{"SLUICED_TEST_MAIN=1", "HOME=" + t.TempDir()} // no SLUICE_* settings from the caller
	out, err := cmd.CombinedOutput()

	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("sluiced serve on a taken address: %v, want exit 1", err)
	}
	if want := "sluiced: listen " + addr + ": address already in use"; !strings.HasPrefix(string(out), want) {
		t.Errorf("sluiced printed\n%s\nwant a line starting %q", out, want)
	}
	if strings.Contains(string(out), "password") {
		t.Errorf("an admin password was printed:\n%s", out)
	}
	if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the data directory was made before the address was bound (stat: %v)", err)
	}
}

// rotate-keys touches only the key directory: it refuses a data directory
// that does not exist, and on one that does, it makes a second key without
// opening the database or creating the admin user.
func TestRotateKeysTouchesOnlyTheKeys(t *testing.T) {
	rotate := func(data string) (string, error) {
		cmd := exec.Command(os.Args[0], "rotate-keys", "--data", data)
		cmd.Env = []string{"SLUICED_TEST_MAIN=1", "HOME=" + t.TempDir(), "SLUICE_AUTH_ENABLED=true"}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if out, err := rotate(missing); err == nil || !strings.Contains(out, "data directory "+missing) {
		t.Errorf("rotate-keys on a missing data directory: %v\n%s", err, out)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("rotate-keys made the missing data directory (stat: %v)", err)
	}

	data := t.TempDir()
	out, err := rotate(data)
	if err != nil || !strings.Contains(out, "new signing key") {
		t.Fatalf("rotate-keys: %v\n%s", err, out)
	}
	if strings.Contains(out, "password") {
		t.Errorf("rotate-keys printed an admin password:\n%s", out)
	}
	entries, _ := os.ReadDir(data)
	if len(entries) != 1 || entries[0].Name() != "keys" {
		t.Errorf("rotate-keys left %v in the data directory, want only keys", entries)
	}
	pems, _ := filepath.Glob(filepath.Join(data, "keys", "*.pem"))
	if len(pems) != 2 {
		t.Errorf("%d keys after rotating a fresh key directory, want the first and the new one", len(pems))
	}
}
