package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/internal/testbed"
)

// The peers' modes: stargz-snapshotter (v0.18.2) on plain eStargz, on
// eStargz optimized with its analyzer's run of the workload's command, and
// the same with prefetch_async_size (the container starts before the
// prefetch ends: the peer at its best); soci-snapshotter (v0.16.1) on a
// SOCI index manifest v2, without and with a prefetch list of the files the
// same analyzer recorded. peerd (bench/coldstart/peerd, a module of its
// own, built by the benchmark from the peers' Go modules) runs their
// snapshotters, makes their images and pulls as their clients do.
type peerMode struct {
	snapshotter string // the proxy plugin's name: stargz or soci
	image       string // the peer's form of the image: its tag in NAME-peers
	asyncSize   int64  // stargz: prefetch_async_size
}

var peerModes = map[string]peerMode{
	"estargz":           {"stargz", "estargz", 0},
	"estargz-opt":       {"stargz", "estargz-opt", 0},
	"estargz-opt-async": {"stargz", "estargz-opt", 1},
	"soci":              {"soci", "soci", 0},
	"soci-prefetch":     {"soci", "soci-prefetch", 0},
}

// buildPeerd builds peerd into the work directory, once.
func (e *env) buildPeerd() (string, error) {
	bin := filepath.Join(e.Work, "peerd")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = "bench/coldstart/peerd"
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build peerd (the peers' snapshotters; soci needs zlib1g-dev): %v\n%s", err, out)
	}
	fmt.Fprintf(os.Stderr, "built the peers' snapshotters in %v\n", time.Since(start).Round(time.Second))
	return bin, nil
}

// peerRef is where a peer's form of a workload's image is.
func (e *env) peerRef(w workload, image string) string {
	return e.Host + "/" + w.Name + "-peers:" + image
}

// preparePeers makes the peers' forms of a workload's image that the modes
// need, on a node of containerd alone, unshaped.
func (e *env) preparePeers(ctx context.Context, w workload, modes []string) error {
	kinds := map[string]bool{}
	for _, m := range modes {
		if p, ok := peerModes[m]; ok {
			kinds[p.image] = true
		}
	}
	if len(kinds) == 0 {
		return nil
	}
	peerd, err := e.buildPeerd()
	if err != nil {
		return err
	}
	args, _ := json.Marshal(w.Args)
	for _, kind := range []string{"estargz", "estargz-opt", "soci", "soci-prefetch"} {
		if !kinds[kind] {
			continue
		}
		// A fresh containerd each: a second analyzer run's record has the
		// first one's digest, whose blob containerd may have collected.
		n, err := e.StartNode(testbed.NodeSpec{})
		if err != nil {
			return err
		}
		start := time.Now()
		cmd := exec.CommandContext(ctx, peerd, "prepare", "--containerd", n.Sock, "--src", e.Host+"/"+w.Name+":latest",
			"--dst", e.peerRef(w, kind), "--kind", kind, "--args", string(args))
		cmd.Env = append(os.Environ(), "PEERD_USER=admin", "PEERD_PASSWORD="+testbed.Password)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err = cmd.Run()
		n.Stop()
		if err != nil {
			return fmt.Errorf("%s of %s: %v\n%s", kind, w.Name, err, out.String())
		}
		fmt.Fprintf(os.Stderr, "%s: %s ready in %v\n%s", w.Name, kind, time.Since(start).Round(time.Second), indent(out.String()))
	}
	return nil
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

// peerTrial pulls the peer's form of the workload's image with the peer's
// client and snapshotter on a fresh node and runs it, timing the first line
// from the start of the pull.
func (e *env) peerTrial(ctx context.Context, w workload, mode string) (trialResult, error) {
	p := peerModes[mode]
	peerd, err := e.buildPeerd()
	if err != nil {
		return trialResult{}, err
	}
	args := []string{p.snapshotter}
	if p.asyncSize > 0 {
		args = append(args, "--prefetch-async-size", strconv.FormatInt(p.asyncSize, 10))
	}
	n, err := e.StartNode(testbed.NodeSpec{Proxy: p.snapshotter, Cmd: append([]string{peerd}, args...),
		Env: []string{"PEERD_USER=admin", "PEERD_PASSWORD=" + testbed.Password}})
	if err != nil {
		return trialResult{}, err
	}
	defer n.Stop()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	before, err := e.BytesSent(ctx)
	if err != nil {
		return trialResult{}, err
	}
	ref := e.peerRef(w, p.image)
	cmd := exec.CommandContext(ctx, peerd, "pull", "--containerd", n.Sock, "--snapshotter", p.snapshotter, ref)
	cmd.Env = append(os.Environ(), "PEERD_USER=admin", "PEERD_PASSWORD="+testbed.Password)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return trialResult{}, fmt.Errorf("peerd pull %s: %v\n%s", ref, err, stderr.String())
	}
	var started, pulled int64
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "start":
				started = v
			case "pulled":
				pulled = v
			}
		}
	}
	if started == 0 || pulled == 0 {
		return trialResult{}, fmt.Errorf("peerd pull printed no times: %q", out)
	}
	var after int64
	var afterErr error
	line, at, err := runFirstLine(ctx, n.Sock, ref, p.snapshotter, w.Args, func() {
		after, afterErr = e.BytesSent(context.Background())
	})
	if err != nil {
		return trialResult{}, err
	}
	if afterErr != nil {
		return trialResult{}, afterErr
	}
	if !strings.Contains(line, "hello") && !strings.Contains(line, "ready") {
		return trialResult{}, fmt.Errorf("unexpected first line %q", line)
	}
	start := time.Unix(0, started)
	return trialResult{firstLine: at.Sub(start), pull: time.Unix(0, pulled).Sub(start), bytes: after - before}, nil
}
