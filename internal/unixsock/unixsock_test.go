package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	if pid, err := Owner(path); pid != 0 || err != nil {
		t.Errorf("no socket: %d, %v; want 0, nil", pid, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if pid, err := Owner(path); pid != os.Getpid() || err != nil {
		t.Errorf("listening: %d, %v; want this process, %d", pid, err, os.Getpid())
	}
	// A listener that exited without removing its socket file.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	if pid, err := Owner(path); pid != 0 || err != nil {
		t.Errorf("closed: %d, %v; want 0, nil", pid, err)
	}
}
