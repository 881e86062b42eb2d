package testenv

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build compiles the packages into dir (without the race detector: they
// are the programs under test and their tools).
func Build(t testing.TB, dir string, pkgs ...string) {
	t.Helper()
	for _, p := range pkgs {
		args := []string{"build", "-o", filepath.Join(dir, filepath.Base(p)), p}
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// StartSluiced runs the sluiced binary bin on a port of the kernel's
// choosing with authentication on, its data in data, the admin's password
// password and env added to its environment; it returns its host:port once
// it answers, and stops it (SIGTERM) when the test ends, printing its log's
// last lines if the test failed.
func StartSluiced(t testing.TB, bin, data, password string, env ...string) string {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--data", data)
	cmd.Env = append(os.Environ(), "SLUICE_LOG_FORMAT=json", "SLUICE_LOG_ACCESS=false", "SLUICE_ADMIN_PASSWORD="+password,
		"SLUICE_AUTH_ENABLED=true", "SLUICE_STREAMING_WORKERS=1")
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logs syncLog
	addr := make(chan string, 1)
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			logs.add(line)
			var entry struct{ Msg, Address string }
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "sluiced serving" {
				addr <- entry.Address
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("sluiced %s log (last lines):\n%s", data, logs.tail(40))
		}
	})
	var host string
	select {
	case host = <-addr:
	case <-exited:
		t.Fatalf("sluiced exited:\n%s", logs.tail(40))
	case <-time.After(time.Minute):
		t.Fatalf("sluiced did not start:\n%s", logs.tail(40))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + host + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return host
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluiced at %s is not healthy: %v", host, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *syncLog) add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
}

func (l *syncLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines[max(0, len(l.lines)-n):], "\n")
}
