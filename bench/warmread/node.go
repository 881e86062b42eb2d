package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/opencontainers/image-spec/identity"

	"github.com/sluicehq/sluice/bench/internal/testbed"
	"github.com/sluicehq/sluice/internal/fusemanager"
	"github.com/sluicehq/sluice/internal/lazypull"
)

// view is an image's root filesystem as a container sees it, mounted from
// one snapshotter's snapshots at dir: an overlay of its layers under an
// empty upper directory.
type view struct {
	snapshotter string
	dir         string
}

// pullAndView pulls the image ref on node n with the snapshotter (whose
// layers must then be streamed, for sluice) and mounts a container's view
// of it under the node's directory.
func pullAndView(ctx context.Context, n *testbed.Node, ref, snapshotter string) (*view, error) {
	res, err := lazypull.Pull(ctx, ref, lazypull.Options{Address: n.Sock, Snapshotter: snapshotter, PlainHTTP: true,
		Credentials: func(string) (string, string, error) { return "admin", testbed.Password, nil }})
	if err != nil {
		return nil, err
	}
	if snapshotter == "sluice" {
		for _, l := range res.Layers {
			if !l.Streamed {
				return nil, fmt.Errorf("layer %s of %s was not streamed; see %s", l.Digest, ref, n.Dir)
			}
		}
	}
	return newView(ctx, n, ref, snapshotter)
}

// newView mounts a view of a pulled image: the root a container created
// now would get.
func newView(ctx context.Context, n *testbed.Node, ref, snapshotter string) (*view, error) {
	c, err := containerd.New(n.Sock, containerd.WithDefaultNamespace("default"))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	img, err := c.GetImage(ctx, ref)
	if err != nil {
		return nil, err
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return nil, err
	}
	key := "warmread-" + snapshotter + "-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	// An active snapshot, as a container's root: an overlay with an upper
	// directory, which the reads never write to. Nothing refers to it, so
	// a label keeps containerd's garbage collector from removing it.
	mounts, err := c.SnapshotService(snapshotter).Prepare(ctx, key, identity.ChainID(diffIDs).String(),
		snapshots.WithLabels(map[string]string{"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339)}))
	if err != nil {
		return nil, fmt.Errorf("snapshot of %s with %s: %w", ref, snapshotter, err)
	}
	dir := filepath.Join(n.Dir, key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := mount.All(mounts, dir); err != nil {
		return nil, fmt.Errorf("mount the view of %s with %s: %w", ref, snapshotter, err)
	}
	return &view{snapshotter: snapshotter, dir: dir}, nil
}

// labelLocal is the label of a streamed snapshot unpacked once complete
// (snapshotter.LabelLocal; that package would bring the snapshotter's
// dependencies into this module).
const labelLocal = "containerd.io/snapshot/sluice.local"

// waitUnpacked waits until the snapshotter has unpacked the given number
// of complete streamed layers in place of their FUSE mounts.
func waitUnpacked(ctx context.Context, n *testbed.Node, layers int, d time.Duration) error {
	c, err := containerd.New(n.Sock, containerd.WithDefaultNamespace("default"))
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(d)
	for {
		unpacked := 0
		err := c.SnapshotService("sluice").Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			if info.Labels[labelLocal] != "" {
				unpacked++
			}
			return nil
		})
		if err != nil {
			return err
		}
		if unpacked >= layers {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d layers unpacked after %v", unpacked, layers, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitComplete waits until the FUSE manager has fetched every chunk of
// each of the layers it mounted (its background completion, which starts
// once a layer's reads have been quiet for its backgroundDelay, 2 s by
// default) and verified their DiffIDs.
func waitComplete(ctx context.Context, n *testbed.Node, layers int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		st, err := fusemanager.NewClient(n.ManagerSock).Statuses(ctx)
		if err != nil {
			return err
		}
		complete := 0
		for _, s := range st {
			if s.Bad != "" {
				return fmt.Errorf("layer at %s found bad: %s", s.Mountpoint, s.Bad)
			}
			if s.Complete {
				complete++
			}
		}
		if len(st) >= layers && complete == len(st) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d layers complete after %v", complete, len(st), d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// cpuTime is the CPU time (user and system) a process has used so far;
// 0 for pid 0.
func cpuTime(pid int) (time.Duration, error) {
	if pid == 0 {
		return 0, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command's name, which is in parentheses and
	// may hold spaces: utime and stime are the 12th and 13th of them.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticksPerSecond, nil
}

// recordPerf starts perf recording the CPU profile of process pid, with
// call graphs, into out; the function it returns stops it.
func recordPerf(pid int, out string) (func(), error) {
	if pid == 0 {
		return nil, fmt.Errorf("no FUSE manager to profile")
	}
	cmd := exec.Command("perf", "record", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", out)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf: %w", err)
	}
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}, nil
}

// setReadAhead sets the kernel's read-ahead of every FUSE mount of
// sluice-snapshotter below dir (its backing device's read_ahead_kb).
func setReadAhead(dir string, kib int) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		// ID parent major:minor root mountpoint options... - fstype source
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if sep < 0 || sep+1 >= len(f) || len(f) < 5 || !strings.HasPrefix(f[4], dir+"/") || f[sep+1] != "fuse.sluice" {
			continue
		}
		if err := os.WriteFile("/sys/class/bdi/"+f[2]+"/read_ahead_kb", []byte(strconv.Itoa(kib)), 0); err != nil {
			return fmt.Errorf("read-ahead of %s: %w", f[4], err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("no FUSE mount of sluice-snapshotter under %s", dir)
	}
	log.Printf("read-ahead of %d FUSE mounts set to %d KiB", n, kib)
	return nil
}
