//go:build linux

package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// daemon is a server process a test runs in a process group of its own
// (containerd, docker-registry, sluice-snapshotter), which the test's
// cleanup stops.
type daemon struct {
	name string
	pid  int
	// logs is its output, to be read only once it has exited, unless it
	// goes to logFile, which can be read at any time.
	logs    bytes.Buffer
	logFile string
	exited  chan error
}

// startDaemon starts cmd, keeping its output. Cleanup stops its process
// group, then calls after (when not nil), then logs the output if the test
// failed.
func startDaemon(t *testing.T, name string, cmd *exec.Cmd, after func()) *daemon {
	t.Helper()
	d := &daemon{name: name}
	cmd.Stdout, cmd.Stderr = &d.logs, &d.logs
	d.start(t, cmd, after)
	return d
}

// startDaemonLogFile is startDaemon with the output appended to logFile.
func startDaemonLogFile(t *testing.T, name string, cmd *exec.Cmd, logFile string, after func()) *daemon {
	t.Helper()
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own descriptor
	d := &daemon{name: name, logFile: logFile}
	cmd.Stdout, cmd.Stderr = f, f
	d.start(t, cmd, after)
	return d
}

func (d *daemon) start(t *testing.T, cmd *exec.Cmd, after func()) {
	t.Helper()
	d.exited = make(chan error, 1)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", d.name, err)
	}
	d.pid = cmd.Process.Pid
	go func() { d.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stopProcessGroup(t, d.pid, d.exited)
		if after != nil {
			after()
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", d.name, lastLines(d.output(), 60))
		}
	})
}

// output is what the daemon printed: all of it once it has exited, or at
// any time when it goes to a file.
func (d *daemon) output() string {
	if d.logFile == "" {
		return d.logs.String()
	}
	b, _ := os.ReadFile(d.logFile)
	return string(b)
}

// waitReady polls ready until it holds, failing the test at once if the
// daemon exits meanwhile.
func (d *daemon) waitReady(t *testing.T, timeout time.Duration, what string, ready func() bool) {
	t.Helper()
	waitFor(t, timeout, what, func() bool {
		select {
		case err := <-d.exited:
			d.exited <- err
			t.Fatalf("%s exited (%v):\n%s", d.name, err, d.output())
		default:
		}
		return ready()
	})
}

// kill sends SIGKILL to the daemon's process alone, as a crash would, and
// waits until it is gone. Whatever it started in a session of its own
// lives on.
func (d *daemon) kill(t *testing.T) {
	t.Helper()
	_ = syscall.Kill(d.pid, syscall.SIGKILL)
	select {
	case err := <-d.exited:
		d.exited <- err // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatalf("%s (pid %d) did not die from SIGKILL", d.name, d.pid)
	}
}

// stopProcessGroup sends SIGTERM to a process group, then SIGKILL if its
// leader has not exited in time.
func stopProcessGroup(t *testing.T, pgid int, exited <-chan error) {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Logf("process group %d ignored SIGTERM; killing it", pgid)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
	// Anything the group started and left behind goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}
