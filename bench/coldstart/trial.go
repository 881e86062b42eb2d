package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/sluicehq/sluice/internal/lazypull"
	"github.com/sluicehq/sluice/internal/unixsock"
)

// node is a fresh containerd (and, for lazy trials, snapshotter).
type node struct {
	dir     string
	sock    string
	daemons []*exec.Cmd
}

// nodeSpec says what runs beside a node's containerd: the proxy
// snapshotter's name in containerd's configuration and its command, to
// which --root and --address are added ("" and nil: containerd alone).
type nodeSpec struct {
	proxy string
	cmd   []string
	env   []string
}

// sluiceNode is the spec of a node running the sluice-snapshotter of the
// directory snBin.
func (e *env) sluiceNode(snBin string) nodeSpec {
	return nodeSpec{proxy: "sluice", cmd: []string{filepath.Join(snBin, "sluice-snapshotter"), "--config", e.snapshotterConfig}}
}

// startNode starts a node.
func (e *env) startNode(spec nodeSpec) (*node, error) {
	dir, err := os.MkdirTemp("", "cs-")
	if err != nil {
		return nil, err
	}
	n := &node{dir: dir, sock: filepath.Join(dir, "c.sock")}
	snSock := filepath.Join(dir, "sn.sock")
	proxy := ""
	if spec.proxy != "" {
		proxy = fmt.Sprintf("[proxy_plugins.%s]\n  type = \"snapshot\"\n  address = %q\n", spec.proxy, snSock)
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
%s`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), n.sock, filepath.Join(dir, "opt"), proxy)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if spec.proxy != "" {
		args := append(spec.cmd[1:len(spec.cmd):len(spec.cmd)], "--root", filepath.Join(dir, "sn"), "--address", snSock)
		if err := n.startEnv(spec.env, spec.cmd[0], args...); err != nil {
			return nil, err
		}
		if err := waitFor(30*time.Second, func() bool { _, err := os.Stat(snSock); return err == nil }); err != nil {
			n.stop()
			return nil, fmt.Errorf("%s did not start; see %s", filepath.Base(spec.cmd[0]), dir)
		}
	}
	if err := n.start("containerd", "--config", filepath.Join(dir, "config.toml")); err != nil {
		n.stop()
		return nil, err
	}
	if err := waitFor(30*time.Second, func() bool { return exec.Command("ctr", "--address", n.sock, "version").Run() == nil }); err != nil {
		n.stop()
		return nil, fmt.Errorf("containerd did not start")
	}
	return n, nil
}

func (n *node) start(name string, args ...string) error { return n.startEnv(nil, name, args...) }

func (n *node) startEnv(env []string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.Create(filepath.Join(n.dir, filepath.Base(name)+".log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	n.daemons = append(n.daemons, cmd)
	return nil
}

// stop ends the node: the containers a trial left behind, through
// containerd, which then ends their shims; the daemons it started; and the
// FUSE manager, in a session of its own, found by its PID as the process
// listening on its socket. Then it unmounts and removes everything.
func (n *node) stop() {
	n.deleteContainers()
	manager, _ := unixsock.Owner(filepath.Join(n.dir, "fuse-manager.sock"))
	for i := len(n.daemons) - 1; i >= 0; i-- {
		_ = syscall.Kill(-n.daemons[i].Process.Pid, syscall.SIGKILL)
		_ = n.daemons[i].Wait()
	}
	if manager > 0 {
		_ = syscall.Kill(manager, syscall.SIGKILL)
	}
	unmountUnder(n.dir)
	if keep := os.Getenv("COLDSTART_KEEP"); keep != "" {
		// Keep the daemons' logs for a look at what a trial did.
		logs, _ := filepath.Glob(filepath.Join(n.dir, "*.log"))
		logs = append(logs, filepath.Join(n.dir, "sn", "fuse-manager.log"))
		for _, l := range logs {
			if b, err := os.ReadFile(l); err == nil {
				_ = os.WriteFile(filepath.Join(os.TempDir(), "coldstart-"+filepath.Base(n.dir)+"-"+filepath.Base(l)), b, 0o644)
			}
		}
	}
	_ = os.RemoveAll(n.dir)
}

// deleteContainers kills and deletes what a failed trial left running.
func (n *node) deleteContainers() {
	c, err := containerd.New(n.sock, containerd.WithDefaultNamespace("default"), containerd.WithTimeout(5*time.Second))
	if err != nil {
		return // containerd never started
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	containers, _ := c.Containers(ctx)
	for _, ct := range containers {
		if task, err := ct.Task(ctx, nil); err == nil {
			_, _ = task.Delete(ctx, containerd.WithProcessKill)
		}
		_ = ct.Delete(ctx, containerd.WithSnapshotCleanup)
	}
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
}

// trial pulls the workload's image on a fresh node and runs it, timing the
// first line of its output from the start of the pull. Modes: full (the
// overlayfs snapshotter downloads everything), lazy (sluice-snapshotter,
// the first start of the image anywhere: the registry has no startup
// profile), profiled (sluice-snapshotter on a node after the first: the
// registry has the profile the first recorded), record (a lazy start that
// waits for the node to give the registry its profile). snBin is the
// directory of the sluice-snapshotter to run.
func (e *env) trial(ctx context.Context, w workload, mode, snBin string) (trialResult, error) {
	lazy := mode != "full"
	switch mode {
	case "lazy":
		if err := e.deleteProfiles(ctx, w); err != nil {
			return trialResult{}, err
		}
	case "profiled":
		if !e.hasProfiles(ctx, w) {
			return trialResult{}, fmt.Errorf("the registry has no startup profile of %s", w.name)
		}
	}
	spec := nodeSpec{}
	if lazy {
		spec = e.sluiceNode(snBin)
	}
	n, err := e.startNode(spec)
	if err != nil {
		return trialResult{}, err
	}
	defer n.stop()
	snapshotter := "overlayfs"
	if lazy {
		snapshotter = "sluice"
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	before, err := e.registryBytes(ctx)
	if err != nil {
		return trialResult{}, err
	}
	ref := e.host + "/" + w.name + ":latest"
	start := time.Now()
	res, err := lazypull.Pull(ctx, ref, lazypull.Options{Address: n.sock, Snapshotter: snapshotter, PlainHTTP: true,
		Credentials: func(string) (string, string, error) { return "admin", password, nil }})
	if err != nil {
		return trialResult{}, err
	}
	pulled := time.Since(start)
	if lazy {
		for _, l := range res.Layers {
			if !l.Streamed {
				return trialResult{}, fmt.Errorf("layer %s was not streamed; see %s", l.Digest, n.dir)
			}
		}
	}
	var after int64
	var afterErr error
	line, at, err := runFirstLine(ctx, n.sock, ref, snapshotter, w.args, func() {
		after, afterErr = e.registryBytes(context.Background())
	})
	if err != nil {
		return trialResult{}, err
	}
	if afterErr != nil {
		return trialResult{}, afterErr
	}
	first := at.Sub(start)
	if os.Getenv("COLDSTART_RERUN") != "" {
		// A second run on the same node, everything now local: the floor
		// under the first line that fetching cannot lower.
		if os.Getenv("COLDSTART_RERUN") == "cold" {
			// Drop the page cache: the rerun then reads through the
			// snapshotter again, with every chunk already on the node.
			_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
		}
		t0 := time.Now()
		_, at, err := runFirstLine(ctx, n.sock, ref, snapshotter, w.args, func() {})
		if err != nil {
			return trialResult{}, err
		}
		phases.Add("rerun first line", at.Sub(t0))
	}
	if !strings.Contains(line, "hello") && !strings.Contains(line, "ready") {
		return trialResult{}, fmt.Errorf("unexpected first line %q", line)
	}
	if mode == "record" {
		// The node gives its profile once the container's reads go quiet.
		if err := waitFor(time.Minute, func() bool { return e.hasProfiles(ctx, w) }); err != nil {
			return trialResult{}, fmt.Errorf("the node gave no startup profile of %s: %w", w.name, err)
		}
	}
	return trialResult{firstLine: first, pull: pulled, bytes: after - before}, nil
}

// runFirstLine creates and starts a container of ref and returns its first
// line of output and when it arrived; atFirst runs as it arrives, before
// the container's teardown (which is not timed).
func runFirstLine(ctx context.Context, sock, ref, snapshotter string, args []string, atFirst func()) (string, time.Time, error) {
	c, err := containerd.New(sock, containerd.WithDefaultNamespace("default"))
	if err != nil {
		return "", time.Time{}, err
	}
	defer c.Close()
	img, err := c.GetImage(ctx, ref)
	if err != nil {
		return "", time.Time{}, err
	}
	id := fmt.Sprintf("cs%d", time.Now().UnixNano())
	t0 := time.Now()
	container, err := c.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithSnapshotter(snapshotter),
		containerd.WithNewSnapshot(id, img), containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(args...)))
	if err != nil {
		return "", time.Time{}, err
	}
	defer container.Delete(context.Background(), containerd.WithSnapshotCleanup)
	phases.Add("new container", time.Since(t0))
	pr, pw := io.Pipe()
	task, err := container.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, pw, pw)))
	if err != nil {
		return "", time.Time{}, err
	}
	// Waiting must start before the task does, or its exit can be missed.
	exited, err := task.Wait(context.Background())
	if err != nil {
		return "", time.Time{}, err
	}
	defer func() {
		_ = task.Kill(context.Background(), syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
		_, _ = task.Delete(context.Background())
	}()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, pr)
	}()
	phases.Add("new task", time.Since(t0))
	if err := task.Start(ctx); err != nil {
		return "", time.Time{}, err
	}
	phases.Add("task started", time.Since(t0))
	select {
	case l, ok := <-lines:
		if !ok {
			return "", time.Time{}, fmt.Errorf("the container printed nothing")
		}
		at := time.Now()
		atFirst()
		phases.Add("first line", at.Sub(t0))
		pw.Close()
		return l, at, nil
	case <-ctx.Done():
		return "", time.Time{}, ctx.Err()
	}
}

// phases records when steps of a trial ended, for -v.
var phases = &phaseLog{}

type phaseLog struct{ lines []string }

func (p *phaseLog) Add(name string, d time.Duration) {
	p.lines = append(p.lines, fmt.Sprintf("%s at %v", name, d.Round(time.Millisecond)))
}

func (p *phaseLog) Flush() string {
	s := strings.Join(p.lines, ", ")
	p.lines = nil
	return s
}
