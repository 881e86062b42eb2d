package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// sluiced is one running registry process. It listens on a port the kernel
// chose (--listen 127.0.0.1:0); the address comes from its startup log line.
type sluiced struct {
	t    *testing.T
	addr string
	cmd  *exec.Cmd

	mu    sync.Mutex
	lines []string // stderr, one entry per line

	exited  chan struct{}
	waitErr error
}

// startSluiced runs `sluiced serve` on data with JSON logs and the extra
// SLUICE_* settings in env, and returns once it answers /healthz. The test's
// cleanup stops it if it is still running.
func startSluiced(t *testing.T, data string, env ...string) *sluiced {
	t.Helper()
	cmd := exec.Command(sluicedBin, "serve", "--listen", "127.0.0.1:0", "--data", data)
	cmd.SysProcAttr = dieWithTest()
	// Later entries win, so these override any SLUICE_* of the caller.
	cmd.Env = append(append(os.Environ(), "SLUICE_LOG_FORMAT=json", "SLUICE_LOG_ACCESS=true", "SLUICE_AUTH_ENABLED=false"), env...)
	return runSluiced(t, cmd)
}

// runSluiced starts a sluiced command made by the caller, which must log
// JSON, and returns once it answers /healthz.
func runSluiced(t *testing.T, cmd *exec.Cmd) *sluiced {
	t.Helper()
	s := &sluiced{t: t, cmd: cmd, exited: make(chan struct{})}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start sluiced: %v", err)
	}
	addrc := make(chan string, 1)
	go s.readLog(stderr, addrc)
	t.Cleanup(s.cleanup)

	select {
	case s.addr = <-addrc:
	case <-s.exited:
		t.Fatalf("sluiced exited before serving (%v):\n%s", s.waitErr, s.logText())
	case <-time.After(time.Minute):
		t.Fatalf("sluiced did not log its address within a minute:\n%s", s.logText())
	}
	waitFor(t, 30*time.Second, "sluiced /healthz answers 200", func() bool {
		resp, err := http.Get(s.url("/healthz"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return s
}

// readLog keeps every stderr line and sends the serving address once. It
// reaps the process after stderr closes, as exec requires.
func (s *sluiced) readLog(stderr io.Reader, addrc chan<- string) {
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		s.mu.Lock()
		s.lines = append(s.lines, line)
		s.mu.Unlock()
		if sent {
			continue
		}
		var entry struct{ Msg, Address string }
		if json.Unmarshal([]byte(line), &entry) == nil && (entry.Msg == "sluiced serving" || entry.Msg == "worker probes and metrics") && entry.Address != "" {
			addrc <- entry.Address
			sent = true
		}
	}
	s.waitErr = s.cmd.Wait()
	close(s.exited)
}

// url is the address of path on this registry.
func (s *sluiced) url(path string) string { return "http://" + s.addr + path }

// kill ends the process with SIGKILL, as a crash would, and reaps it.
func (s *sluiced) kill() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.t.Fatalf("sluiced pid %d did not die from SIGKILL", s.cmd.Process.Pid)
	}
}

// stop asks for a graceful shutdown with SIGTERM and returns how the process
// exited, or an error if it is still running after the deadline.
func (s *sluiced) stop(deadline time.Duration) error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return s.waitErr
	case <-time.After(deadline):
		return errors.New("sluiced still running after SIGTERM")
	}
}

func (s *sluiced) cleanup() {
	select {
	case <-s.exited:
	default:
		if err := s.stop(30 * time.Second); err != nil {
			s.t.Errorf("stopping sluiced: %v", err)
			s.kill()
		}
	}
	text := s.logText()
	if strings.Contains(text, "WARNING: DATA RACE") {
		s.t.Errorf("the race detector fired in sluiced:\n%s", text)
	} else if s.t.Failed() {
		s.t.Logf("sluiced log (%s) without successful requests:\n%s", s.addr, lastLines(s.notableLog(), 80))
	}
}

// notableLog is the log without the access lines of requests that
// succeeded, which drown what matters when a test fails.
func (s *sluiced) notableLog() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keep []string
	for _, line := range s.lines {
		var e accessEntry
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "request" && e.Status < 400 {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

func (s *sluiced) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

// accessEntry is one access-log line of sluiced.
type accessEntry struct {
	Msg    string `json:"msg"`
	Method string `json:"method"`
	Path   string `json:"path"`
	Status int    `json:"status"`
	In     int64  `json:"in"`
}

// accessLog returns the requests sluiced has logged so far.
func (s *sluiced) accessLog() []accessEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []accessEntry
	for _, line := range s.lines {
		var e accessEntry
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "request" {
			out = append(out, e)
		}
	}
	return out
}

func lastLines(text string, n int) string {
	lines := strings.Split(text, "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting until %s", timeout, what)
	}
}

// poll calls cond every 20 ms until it holds or timeout has passed, and
// reports whether it held.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
