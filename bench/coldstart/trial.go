package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/sluicehq/sluice/bench/internal/testbed"
	"github.com/sluicehq/sluice/internal/fusemanager"
	"github.com/sluicehq/sluice/internal/lazypull"
)

// trial pulls the workload's image on a fresh node and runs it, timing the
// first line of its output from the start of the pull. Modes: full (the
// overlayfs snapshotter downloads everything), lazy (sluice-snapshotter,
// the first start of the image anywhere: the registry has only the
// startup profiles it inferred when it converted the image), noprofile
// (the same with no profile at all, as for an image whose start the
// registry cannot infer), profiled (sluice-snapshotter on a node after the
// first: the registry has the profiles the first recorded), record (a
// start with no profile that waits for the node to give the registry its
// recording). snBin is the directory of the sluice-snapshotter to run.
func (e *env) trial(ctx context.Context, w workload, mode, snBin string) (trialResult, error) {
	lazy := mode != "full"
	switch mode {
	case "lazy":
		if err := e.setProfiles(ctx, w, e.inferred[w.Name]); err != nil {
			return trialResult{}, err
		}
	case "noprofile", "record":
		if err := e.deleteProfiles(ctx, w); err != nil {
			return trialResult{}, err
		}
	case "profiled":
		if err := e.setProfiles(ctx, w, e.profiles[w.Name]); err != nil {
			return trialResult{}, err
		}
		if !e.hasProfiles(ctx, w) {
			return trialResult{}, fmt.Errorf("the registry has no startup profile of %s", w.Name)
		}
	}
	spec := testbed.NodeSpec{}
	if lazy {
		spec = e.SluiceNode(snBin)
	}
	n, err := e.StartNode(spec)
	if err != nil {
		return trialResult{}, err
	}
	defer n.Stop()
	snapshotter := "overlayfs"
	if lazy {
		snapshotter = "sluice"
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	before, err := e.BytesSent(ctx)
	if err != nil {
		return trialResult{}, err
	}
	ref := e.Host + "/" + w.Name + ":latest"
	start := time.Now()
	res, err := lazypull.Pull(ctx, ref, lazypull.Options{Address: n.Sock, Snapshotter: snapshotter, PlainHTTP: true,
		Credentials: func(string) (string, string, error) { return "admin", testbed.Password, nil }})
	if err != nil {
		return trialResult{}, err
	}
	pulled := time.Since(start)
	if lazy {
		for _, l := range res.Layers {
			if !l.Streamed {
				return trialResult{}, fmt.Errorf("layer %s was not streamed; see %s", l.Digest, n.Dir)
			}
		}
	}
	var after, read int64
	var afterErr error
	line, at, err := runFirstLine(ctx, n.Sock, ref, snapshotter, w.Args, func() {
		after, afterErr = e.BytesSent(context.Background())
		if lazy && afterErr == nil {
			read, afterErr = readBytes(context.Background(), n)
		}
	})
	if err != nil {
		return trialResult{}, err
	}
	if afterErr != nil {
		return trialResult{}, afterErr
	}
	first := at.Sub(start)
	var warm time.Duration
	if rerun := os.Getenv("COLDSTART_RERUN"); rerun != "" || mode == "profiled" {
		// A second start on the same node, everything now local: the
		// floor under the first line that fetching cannot lower.
		if rerun == "cold" {
			// Drop the page cache: the rerun then reads through the
			// snapshotter again, with every chunk already on the node.
			_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
		}
		t0 := time.Now()
		_, at, err := runFirstLine(ctx, n.Sock, ref, snapshotter, w.Args, func() {})
		if err != nil {
			return trialResult{}, err
		}
		warm = at.Sub(t0)
		phases.Add("rerun first line", warm)
	}
	if !strings.Contains(line, "hello") && !strings.Contains(line, "ready") {
		return trialResult{}, fmt.Errorf("unexpected first line %q", line)
	}
	if mode == "record" {
		// The node gives its profile once the container's reads go quiet.
		if err := testbed.WaitFor(time.Minute, func() bool { return e.hasProfiles(ctx, w) }); err != nil {
			return trialResult{}, fmt.Errorf("the node gave no startup profile of %s: %w", w.Name, err)
		}
	}
	return trialResult{firstLine: first, pull: pulled, bytes: after - before, read: read, warm: warm}, nil
}

// readBytes is what containers have read from the node's streamed layers,
// the kernel's read-ahead included.
func readBytes(ctx context.Context, n *testbed.Node) (int64, error) {
	st, err := fusemanager.NewClient(n.ManagerSock).Statuses(ctx)
	var total int64
	for _, s := range st {
		total += s.Read
	}
	return total, err
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
