package testbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/sluicehq/sluice/internal/unixsock"
)

// Node is a fresh containerd (and, beside it, a proxy snapshotter) in a
// directory of its own.
type Node struct {
	Dir  string
	Sock string // containerd's socket
	// ManagerSock is where sluice-snapshotter's FUSE manager listens, on
	// a node running it.
	ManagerSock string

	keep    string // the prefix of kept logs, or ""
	daemons []*exec.Cmd
}

// NodeSpec says what runs beside a node's containerd: the proxy
// snapshotter's name in containerd's configuration and its command, to
// which --root and --address are added ("" and nil: containerd alone).
type NodeSpec struct {
	Proxy string
	Cmd   []string
	Env   []string
}

// SluiceNode is the spec of a node running the sluice-snapshotter of the
// directory snBin, with the registry's credentials.
func (r *Registry) SluiceNode(snBin string) NodeSpec {
	return NodeSpec{Proxy: "sluice", Cmd: []string{filepath.Join(snBin, "sluice-snapshotter"), "--config", r.SnapshotterConfig}}
}

// SluiceNodeWith is SluiceNode with more of the snapshotter's
// configuration: YAML keys added after the registry's credentials.
func (r *Registry) SluiceNodeWith(snBin, extra string) (NodeSpec, error) {
	b, err := os.ReadFile(r.SnapshotterConfig)
	if err != nil {
		return NodeSpec{}, err
	}
	f, err := os.CreateTemp(r.Work, "snapshotter-*.yaml")
	if err != nil {
		return NodeSpec{}, err
	}
	_, err = f.WriteString(string(b) + extra)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return NodeSpec{}, err
	}
	return NodeSpec{Proxy: "sluice", Cmd: []string{filepath.Join(snBin, "sluice-snapshotter"), "--config", f.Name()}}, nil
}

// StartNode starts a node.
func (r *Registry) StartNode(spec NodeSpec) (*Node, error) {
	dir, err := os.MkdirTemp("", "node-")
	if err != nil {
		return nil, err
	}
	n := &Node{Dir: dir, Sock: filepath.Join(dir, "c.sock"), ManagerSock: filepath.Join(dir, "fuse-manager.sock")}
	if r.opts.Keep {
		n.keep = r.opts.Name
	}
	snSock := filepath.Join(dir, "sn.sock")
	proxy := ""
	if spec.Proxy != "" {
		proxy = fmt.Sprintf("[proxy_plugins.%s]\n  type = \"snapshot\"\n  address = %q\n", spec.Proxy, snSock)
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
%s`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), n.Sock, filepath.Join(dir, "opt"), proxy)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if spec.Proxy != "" {
		args := append(spec.Cmd[1:len(spec.Cmd):len(spec.Cmd)], "--root", filepath.Join(dir, "sn"), "--address", snSock)
		if err := n.start(spec.Env, spec.Cmd[0], args...); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		if err := WaitFor(30*time.Second, func() bool { _, err := os.Stat(snSock); return err == nil }); err != nil {
			n.Stop()
			return nil, fmt.Errorf("%s did not start; see %s", filepath.Base(spec.Cmd[0]), dir)
		}
	}
	if err := n.start(nil, "containerd", "--config", filepath.Join(dir, "config.toml")); err != nil {
		n.Stop()
		return nil, err
	}
	if err := WaitFor(30*time.Second, func() bool { return exec.Command("ctr", "--address", n.Sock, "version").Run() == nil }); err != nil {
		n.Stop()
		return nil, fmt.Errorf("containerd did not start")
	}
	return n, nil
}

func (n *Node) start(env []string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.Create(filepath.Join(n.Dir, filepath.Base(name)+".log"))
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

// ManagerPID is the process ID of the node's FUSE manager (0: none).
func (n *Node) ManagerPID() int {
	pid, _ := unixsock.Owner(n.ManagerSock)
	return pid
}

// Stop ends the node: the containers a trial left behind, through
// containerd, which then ends their shims; the daemons it started; and the
// FUSE manager, in a session of its own, found by its PID as the process
// listening on its socket. Then it unmounts and removes everything.
func (n *Node) Stop() {
	n.deleteContainers()
	manager := n.ManagerPID()
	for i := len(n.daemons) - 1; i >= 0; i-- {
		_ = syscall.Kill(-n.daemons[i].Process.Pid, syscall.SIGKILL)
		_ = n.daemons[i].Wait()
	}
	if manager > 0 {
		_ = syscall.Kill(manager, syscall.SIGKILL)
	}
	UnmountUnder(n.Dir)
	if n.keep != "" {
		// Keep the daemons' logs for a look at what a trial did.
		logs, _ := filepath.Glob(filepath.Join(n.Dir, "*.log"))
		logs = append(logs, filepath.Join(n.Dir, "sn", "fuse-manager.log"))
		for _, l := range logs {
			if b, err := os.ReadFile(l); err == nil {
				_ = os.WriteFile(filepath.Join(os.TempDir(), n.keep+"-"+filepath.Base(n.Dir)+"-"+filepath.Base(l)), b, 0o644)
			}
		}
	}
	_ = os.RemoveAll(n.Dir)
}

// deleteContainers kills and deletes what a failed trial left running.
func (n *Node) deleteContainers() {
	c, err := containerd.New(n.Sock, containerd.WithDefaultNamespace("default"), containerd.WithTimeout(5*time.Second))
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

// UnmountUnder detaches every mount below dir, deepest first.
func UnmountUnder(dir string) {
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
