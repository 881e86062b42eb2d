//go:build linux

// Package cli_test runs the artifact streaming setup guide's command-line
// steps verbatim, with az aliased to the sluice binary, against real
// sluiced daemons: guide.sh holds the steps and their checks; this test
// builds the binaries, starts the registries, makes the images the guide
// pushes (with mkimage), and runs the script.
package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
	testenv.Build(t, bin, "github.com/sluicehq/sluice/cmd/sluice", "github.com/sluicehq/sluice/cmd/sluiced",
		"github.com/sluicehq/sluice/test/cli/mkimage")

	const upstreamPassword, registryPassword = "upstream-admin-pw", "registry-admin-pw"
	upstream := testenv.StartSluiced(t, filepath.Join(bin, "sluiced"), filepath.Join(work, "upstream"), upstreamPassword)
	registry := testenv.StartSluiced(t, filepath.Join(bin, "sluiced"), filepath.Join(work, "registry"), registryPassword)

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
