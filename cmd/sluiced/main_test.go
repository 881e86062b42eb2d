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
