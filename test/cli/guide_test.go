//go:build linux

// Package cli_test runs the artifact streaming setup guide's command-line
// steps verbatim, with az aliased to the sluice binary, against real
// sluiced daemons: guide.sh holds the steps and their checks; this test
// builds the binaries, starts the registries, makes the images the guide
// pushes (with mkimage), and runs the script.
package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestSetupGuide runs guide.sh.
func TestSetupGuide(t *testing.T) {
	for _, tool := range []string{"bash", "skopeo"} {
		_, err := exec.LookPath(tool)
		testenv.Need(t, err == nil, "%s is not installed (make test-deps installs it)", tool)
	}
	if testing.Short() {
		t.Skip("the setup guide takes half a minute")
	}
	work := t.TempDir()
	bin := filepath.Join(work, "bin")
	build(t, bin, "github.com/sluicehq/sluice/cmd/sluice", "github.com/sluicehq/sluice/cmd/sluiced",
		"github.com/sluicehq/sluice/test/cli/mkimage")

	const upstreamPassword, registryPassword = "upstream-admin-pw", "registry-admin-pw"
	upstream := startSluiced(t, filepath.Join(bin, "sluiced"), filepath.Join(work, "upstream"), upstreamPassword)
	registry := startSluiced(t, filepath.Join(bin, "sluiced"), filepath.Join(work, "registry"), registryPassword)

	images := filepath.Join(work, "images")
	mkimage := func(name, kind, tag string) string {
		dir := filepath.Join(images, name)
		if out, err := exec.Command(filepath.Join(bin, "mkimage"), dir, kind, tag).CombinedOutput(); err != nil {
			t.Fatalf("mkimage %s: %v\n%s", kind, err, out)
		}
		return dir + ":" + tag
	}
	small, large := mkimage("notebook", "small", "latest"), mkimage("large", "large", "newtag")

	plain := ""
	if _, err := exec.LookPath("docker-registry"); err == nil {
		plain = startDistribution(t, filepath.Join(work, "distribution"))
	} else {
		t.Log("docker-registry is not installed: the client-side convert step is skipped")
	}

	home := filepath.Join(work, "home")
	env := append(os.Environ(),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "DOCKER_CONFIG="+filepath.Join(home, ".docker"),
		"SLUICE_CONFIG=", "SLUICE_REGISTRY=", "SLUICE_USERNAME=", "SLUICE_PASSWORD=", "SLUICE_OUTPUT=",
		"REGISTRY_HOST="+registry, "REGISTRY_PASSWORD="+registryPassword,
		"UPSTREAM_HOST="+upstream, "UPSTREAM_PASSWORD="+upstreamPassword,
		"PLAIN_REGISTRY_HOST="+plain, "IMAGE_NOTEBOOK=oci:"+small, "IMAGE_LARGE=oci:"+large, "WORK="+work,
	)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "guide.sh")
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("guide.sh (%s):\n%s", time.Since(start).Round(100*time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("guide.sh: %v", err)
	}
}

// build compiles the packages into dir (without the race detector: they
// are the programs under test and their tools).
func build(t *testing.T, dir string, pkgs ...string) {
	t.Helper()
	for _, p := range pkgs {
		args := []string{"build", "-o", filepath.Join(dir, filepath.Base(p)), p}
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// startSluiced runs sluiced on a port of the kernel's choosing with
// authentication on, and returns its host:port once it answers.
func startSluiced(t *testing.T, bin, data, password string) string {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--data", data)
	cmd.Env = append(os.Environ(), "SLUICE_LOG_FORMAT=json", "SLUICE_LOG_ACCESS=false", "SLUICE_ADMIN_PASSWORD="+password,
		"SLUICE_AUTH_ENABLED=true", "SLUICE_STREAMING_WORKERS=1")
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

// startDistribution runs the distribution registry (docker-registry, which
// has no referrers API) on a free loopback port and returns its host:port.
func startDistribution(t *testing.T, dir string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := ln.Addr().String()
	ln.Close()
	config := fmt.Sprintf("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker-registry", "serve", filepath.Join(dir, "config.yml"))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			return host
		}
		select {
		case <-exited:
			t.Fatalf("docker-registry exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry does not answer: %v", err)
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
