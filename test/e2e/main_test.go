package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testbackend"
)

var (
	// sluicedBin is the binary under test, built once by TestMain.
	sluicedBin string
	// goPathBin is $(go env GOPATH)/bin, where `make test-deps` installs
	// the Go clients (oras, crane) when they are not on PATH.
	goPathBin string
	// binDir holds the binaries TestMain and nodeBinaries build.
	binDir string
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sluice-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Some tests run sluiced as an unprivileged user, who must reach it.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	binDir = dir
	if err := buildSluiced(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return testbackend.Run(m)
}

// buildSluiced compiles ./cmd/sluiced into dir and finds GOPATH/bin.
func buildSluiced(dir string) error {
	goTool, err := goCommand()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sluicedBin = filepath.Join(dir, "sluiced")
	if err := buildCommands(ctx, dir, "sluiced"); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, goTool, "env", "GOPATH").Output()
	if err != nil {
		return fmt.Errorf("go env GOPATH: %w", err)
	}
	if first := strings.Split(strings.TrimSpace(string(out)), string(os.PathListSeparator))[0]; first != "" {
		goPathBin = filepath.Join(first, "bin")
	}
	return nil
}

func goCommand() (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			return filepath.Join(root, "bin", "go"), nil
		}
		return "", fmt.Errorf("the go command is needed to build the binaries under test: %w", err)
	}
	return goTool, nil
}

// buildCommands compiles ./cmd/<name> for each name into dir, with the race
// detector when SLUICE_E2E_RACE=1.
func buildCommands(ctx context.Context, dir string, names ...string) error {
	goTool, err := goCommand()
	if err != nil {
		return err
	}
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	if os.Getenv("SLUICE_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	for _, n := range names {
		args = append(args, "github.com/sluicehq/sluice/cmd/"+n)
	}
	if out, err := exec.CommandContext(ctx, goTool, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}
