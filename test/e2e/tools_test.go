package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// toolTimeout bounds one client command.
const toolTimeout = 3 * time.Minute

// requireTool returns the path of an external client, or skips the test
// when it is not installed.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if goPathBin != "" {
		p := filepath.Join(goPathBin, name)
		if info, err := os.Stat(p); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
			return p
		}
	}
	testenv.Missing(t, "%s is not installed (not on PATH nor in GOPATH/bin); `make test-deps` installs it", name)
	return ""
}

// clients runs command-line clients in a working directory of their own,
// with a HOME of their own so that no credentials or settings of the machine
// reach them.
type clients struct {
	t   *testing.T
	dir string
	env []string
}

func newClients(t *testing.T) *clients {
	home := t.TempDir()
	env := append(os.Environ(),
		"HOME="+home,
		"DOCKER_CONFIG="+filepath.Join(home, ".docker"),
		"REGISTRY_AUTH_FILE="+filepath.Join(home, "auth.json"),
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_RUNTIME_DIR="+filepath.Join(home, "run"),
	)
	// ctr makes the FIFOs of a container's stdio there.
	if err := os.Mkdir(filepath.Join(home, "run"), 0o700); err != nil {
		t.Fatal(err)
	}
	return &clients{t: t, dir: t.TempDir(), env: env}
}

// run runs a client and returns its standard output, failing the test
// (with the command's stderr) when it does not succeed.
func (c *clients) run(tool string, args ...string) string {
	c.t.Helper()
	stdout, stderr, err := c.try(tool, args...)
	if err != nil {
		c.t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(tool), strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

// try runs a client and returns what it printed and how it exited.
func (c *clients) try(tool string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Dir = c.dir
	cmd.Env = c.env
	cmd.WaitDelay = 5 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}
