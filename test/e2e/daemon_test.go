//go:build linux

package e2e

import (
	"bytes"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// daemon is a server process a test runs in a process group of its own
// (containerd, docker-registry), which the test's cleanup stops.
type daemon struct {
	name string
	// logs is its output, to be read only once it has exited.
	logs   bytes.Buffer
	exited chan error
}

// startDaemon starts cmd, keeping its output. Cleanup stops its process
// group, then calls after (when not nil), then logs the output if the test
// failed.
func startDaemon(t *testing.T, name string, cmd *exec.Cmd, after func()) *daemon {
	t.Helper()
	d := &daemon{name: name, exited: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = &d.logs, &d.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { d.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stopProcessGroup(t, cmd.Process.Pid, d.exited)
		if after != nil {
			after()
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, lastLines(d.logs.String(), 60))
		}
	})
	return d
}

// waitReady polls ready until it holds, failing the test at once if the
// daemon exits meanwhile.
func (d *daemon) waitReady(t *testing.T, timeout time.Duration, what string, ready func() bool) {
	t.Helper()
	waitFor(t, timeout, what, func() bool {
		select {
		case err := <-d.exited:
			d.exited <- err
			t.Fatalf("%s exited (%v):\n%s", d.name, err, d.logs.String())
		default:
		}
		return ready()
	})
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
