package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/fusemanager"
)

func TestCgroupService(t *testing.T) {
	for _, c := range []struct {
		name, cgroups, want string
	}{
		{name: "systemd unit, cgroup v2", cgroups: "0::/system.slice/sluice-snapshotter.service\n", want: "sluice-snapshotter.service"},
		{name: "systemd unit, cgroup v1", cgroups: "12:pids:/system.slice/sluice-snapshotter.service\n1:name=systemd:/system.slice/sluice-snapshotter.service\n",
			want: "sluice-snapshotter.service"},
		{name: "a login session", cgroups: "0::/user.slice/user-0.slice/session-4.scope\n"},
		{name: "a container without systemd", cgroups: "1:name=systemd:/\n0::/\n"},
		{name: "another controller names a service", cgroups: "4:memory:/system.slice/other.service\n0::/user.slice\n"},
		{name: "empty", cgroups: ""},
	} {
		if got := cgroupService(c.cgroups); got != c.want {
			t.Errorf("%s: cgroupService(%q) = %q, want %q", c.name, c.cgroups, got, c.want)
		}
	}
}

// TestManagerStop asks a FUSE manager with nothing mounted, over its
// socket, what is in use and to stop: it answers, then stops serving.
func TestManagerStop(t *testing.T) {
	m, err := fusemanager.New(fusemanager.Config{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sock := filepath.Join(t.TempDir(), "fm.sock")
	served := make(chan error, 1)
	go func() { served <- m.Serve(context.Background(), sock) }()
	c := fusemanager.NewClient(sock)
	if !poll(func() bool { return c.Alive(context.Background()) }) {
		t.Fatal("the manager does not answer on its socket")
	}
	if busy, err := c.InUse(context.Background()); err != nil || len(busy) != 0 {
		t.Fatalf("InUse = %v, %v; want nothing", busy, err)
	}
	res, err := c.Stop(context.Background(), false)
	if err != nil || res.Unmounted != 0 || len(res.InUse) != 0 {
		t.Fatalf("Stop = %+v, %v; want nothing unmounted, nothing in use", res, err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve returned %v after Stop", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the manager still serves 10s after Stop")
	}
	if c.Alive(context.Background()) {
		t.Error("the manager answers after Stop")
	}
}

// poll waits up to 10s for cond.
func poll(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}
