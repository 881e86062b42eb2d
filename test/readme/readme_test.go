//go:build linux

// Package readme runs the README's walkthrough as a new user would, so
// that the README cannot drift from what works: the ```sh blocks of
// README.md, in order, in one bash session, in a fresh clone of the
// checkout's HEAD (uncommitted changes do not count).
//
// A block right after a `<!-- not run by tests: REASON -->` line is
// skipped; every other one runs under `set -euo pipefail`, and the first
// that fails fails the test, named by its line. The test fills in what a
// user would: `make run` starts the real target in the background on a
// free port instead of 127.0.0.1:5000 (rewritten in every block), `make
// test` is not run (it is what runs this test), and PASS gets the admin
// password sluiced printed at its first start. Aliases work, as in the
// interactive shell the README is pasted into, and curl fails on an HTTP
// error (--fail-with-body), as a user reading its answer would notice. ctr
// talks to a containerd of the test's own when it runs as root with
// containerd installed; otherwise ctr commands only say they were not run.
package readme

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

const (
	// readmeAddress is the README's registry address, replaced in every block.
	readmeAddress = "127.0.0.1:5000"
	// passwordLine is the README's placeholder for the generated password.
	passwordLine = "PASS='q3J8...'"
	// blockTimeout bounds one block; walkthroughTimeout the whole run.
	blockTimeout       = 3 * time.Minute
	walkthroughTimeout = 5 * time.Minute
)

// TestWalkthrough runs the README's shell blocks.
func TestWalkthrough(t *testing.T) {
	testenv.Need(t, !testing.Short(), "-short: the README walkthrough builds the binaries and runs every client")
	path := requireTools(t)
	work := t.TempDir()
	clone := filepath.Join(work, "sluice")
	gitClone(t, clone)
	readme, err := os.ReadFile(filepath.Join(clone, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseBlocks(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddress(t)
	sluicedLog := filepath.Join(work, "sluiced.log")
	env := walkthroughEnv(t, work, path, "README_ADDRESS="+addr, "README_SLUICED_LOG="+sluicedLog)
	prelude := filepath.Join(work, "prelude.sh")
	if err := os.WriteFile(prelude, []byte(preludeScript), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), walkthroughTimeout)
	defer cancel()
	sh := startShell(t, ctx, clone, env)
	if out, err := sh.run("the prelude", "source "+prelude); err != nil {
		t.Fatalf("the prelude: %v\n%s", err, out)
	}
	for _, b := range blocks {
		where := fmt.Sprintf("README.md:%d", b.line)
		if b.skipReason != "" {
			t.Logf("%s: not run (%s)", where, b.skipReason)
			continue
		}
		text := strings.ReplaceAll(b.text, readmeAddress, addr)
		if strings.Contains(text, passwordLine) {
			password, err := generatedPassword(sluicedLog)
			if err != nil {
				t.Fatalf("%s sets PASS, but %v", where, err)
			}
			text = strings.ReplaceAll(text, passwordLine, "PASS='"+password+"'")
		}
		file := filepath.Join(work, fmt.Sprintf("block-%d.sh", b.line))
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		out, err := sh.run(where, "set -euo pipefail; source "+file+" </dev/null; set +euo pipefail")
		took := time.Since(start).Round(time.Millisecond)
		if err != nil {
			t.Fatalf("%s: the block failed (%v) after %s:\n%s--- its output:\n%s", where, err, took, b.text, out)
		}
		t.Logf("%s (%s):\n%s--- output:\n%s", where, took, b.text, out)
	}
}

// requireTools skips the test when a program the walkthrough runs is
// missing, and returns the PATH it runs with: the test's, then GOPATH/bin
// where make test-deps installs the Go clients.
func requireTools(t *testing.T) string {
	t.Helper()
	gopath := strings.Split(goEnv(t, "GOPATH"), string(os.PathListSeparator))[0]
	path := os.Getenv("PATH") + string(os.PathListSeparator) + filepath.Join(gopath, "bin")
	for _, tool := range []string{"bash", "git", "make", "curl", "jq", "tar", "gzip", "skopeo", "crane", "oras"} {
		if _, err := lookPath(tool, path); err != nil {
			testenv.Missing(t, "%s is not installed (make test-deps installs the clients; jq, curl, git and make come with the system)", tool)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		testenv.Missing(t, "/bin/busybox, which the README's first image is made of, is missing (make test-deps installs busybox-static)")
	}
	return path
}

// walkthroughEnv is the environment of a new user of the clone: a HOME of
// its own (no credentials or settings of the machine), the machine's Go
// caches, and a containerd of the test's own for ctr where it can run one.
func walkthroughEnv(t *testing.T, work, path string, extra ...string) []string {
	t.Helper()
	home := filepath.Join(work, "home")
	for _, dir := range []string{home, filepath.Join(home, "run"), filepath.Join(work, "tmp")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	env := append(cleanEnv(),
		"PATH="+path,
		"HOME="+home,
		"DOCKER_CONFIG="+filepath.Join(home, ".docker"),
		"REGISTRY_AUTH_FILE="+filepath.Join(home, "auth.json"),
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_RUNTIME_DIR="+filepath.Join(home, "run"),
		"TMPDIR="+filepath.Join(work, "tmp"),
	)
	// A new HOME must not move Go's caches: the clone builds offline from
	// the module cache, and fast from the build cache.
	for _, name := range []string{"GOPATH", "GOMODCACHE", "GOCACHE", "GOENV"} {
		env = append(env, name+"="+goEnv(t, name))
	}
	if sock, ok := startContainerd(t, filepath.Join(work, "containerd")); ok {
		env = append(env, "CONTAINERD_ADDRESS="+sock)
	} else {
		env = append(env, "README_NO_CONTAINERD=1")
	}
	return append(env, extra...)
}

// preludeScript stands in for what the test replaces: `make run` in the
// foreground on 127.0.0.1:5000, `make test`, and ctr without a containerd.
const preludeScript = `shopt -s expand_aliases

make() {
	case "$*" in
	run)
		echo "make run: in the background on $README_ADDRESS, its output in $README_SLUICED_LOG"
		SLUICE_LISTEN=$README_ADDRESS command make run >"$README_SLUICED_LOG" 2>&1 &
		local pid=$! i
		for i in $(seq 1200); do
			command curl -sf "http://$README_ADDRESS/healthz" >/dev/null && return 0
			if ! kill -0 $pid 2>/dev/null; then
				echo "make run exited:" >&2; cat "$README_SLUICED_LOG" >&2; return 1
			fi
			sleep 0.1
		done
		echo "make run: sluiced did not answer within 2 minutes:" >&2; cat "$README_SLUICED_LOG" >&2; return 1
		;;
	test) echo "make test: not run (it is what runs this walkthrough)" ;;
	*) command make "$@" ;;
	esac
}

curl() { command curl --fail-with-body "$@"; }

if [ -n "${README_NO_CONTAINERD:-}" ]; then
	ctr() { echo "ctr $1 $2: not run (the test needs root and containerd for it)"; }
fi
`

// block is one ```sh fenced block of the README.
type block struct {
	line       int    // of the opening fence, 1-based
	text       string // between the fences
	skipReason string // from a "not run by tests" marker before it
}

var markerRE = regexp.MustCompile(`^<!--\s*not run by tests:(.*)-->$`)

// parseBlocks returns the README's shell blocks in order. A marker must
// give a reason and stand right before a shell block (blank lines
// between are allowed), or the README is wrong.
func parseBlocks(readme string) ([]block, error) {
	var (
		blocks     []block
		cur        *block
		inFence    bool
		markerLine int
		reason     string
	)
	for i, line := range strings.Split(readme, "\n") {
		n, trimmed := i+1, strings.TrimSpace(line)
		if inFence {
			if trimmed == "```" {
				inFence = false
				if cur != nil {
					blocks = append(blocks, *cur)
					cur = nil
				}
			} else if cur != nil {
				cur.text += line + "\n"
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") {
			inFence = true
			lang := strings.TrimPrefix(trimmed, "```")
			if lang == "sh" || lang == "bash" {
				cur = &block{line: n, skipReason: reason}
			} else if markerLine != 0 {
				return nil, fmt.Errorf("README.md:%d: the \"not run by tests\" marker stands before a %q block, not a shell block", markerLine, lang)
			}
			markerLine, reason = 0, ""
			continue
		}
		if m := markerRE.FindStringSubmatch(trimmed); m != nil {
			if markerLine != 0 {
				return nil, fmt.Errorf("README.md:%d: a \"not run by tests\" marker with no shell block after it", markerLine)
			}
			reason = strings.TrimSpace(m[1])
			if reason == "" {
				return nil, fmt.Errorf("README.md:%d: a \"not run by tests\" marker must say why: <!-- not run by tests: REASON -->", n)
			}
			markerLine = n
			continue
		}
		if trimmed != "" && markerLine != 0 {
			return nil, fmt.Errorf("README.md:%d: a \"not run by tests\" marker with no shell block right after it", markerLine)
		}
	}
	if inFence {
		return nil, errors.New("README.md: a fenced block is not closed")
	}
	if markerLine != 0 {
		return nil, fmt.Errorf("README.md:%d: a \"not run by tests\" marker with no shell block after it", markerLine)
	}
	return blocks, nil
}

// generatedPassword reads the admin password sluiced printed at its first
// start, in the shape the README shows.
func generatedPassword(log string) (string, error) {
	data, err := os.ReadFile(log)
	if err != nil {
		return "", fmt.Errorf("no output of make run: %w", err)
	}
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		if !strings.HasPrefix(line, "Generated password for the admin user") {
			continue
		}
		for _, next := range lines[i+1:] {
			if p := strings.TrimSpace(next); p != "" {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("make run printed no generated password:\n%s", data)
}

// shell is one bash session that runs the blocks one after the other.
type shell struct {
	stdin   io.WriteCloser
	lines   chan string
	exited  chan struct{} // closed once bash is reaped, with waitErr set
	waitErr error
	ctx     context.Context
}

// doneMarker ends the output of each command sent to the shell.
const doneMarker = "__readme_test_done__"

// startShell starts bash in dir; the test's cleanup stops it and whatever
// it left running.
func startShell(t *testing.T, ctx context.Context, dir string, env []string) *shell {
	t.Helper()
	cmd := exec.Command("bash", "--noprofile", "--norc")
	cmd.Dir, cmd.Env = dir, env
	// Its own process group: the registry `make run` leaves running in
	// the background is stopped with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	sh := &shell{stdin: stdin, lines: make(chan string, 256), exited: make(chan struct{}), ctx: ctx}
	go func() { sh.waitErr = cmd.Wait(); close(sh.exited) }()
	go func() {
		defer close(sh.lines)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			sh.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		stopGroup(cmd.Process.Pid, sh.exited)
		for range sh.lines {
		}
	})
	return sh
}

// run sends one command line to the shell and returns what it printed up
// to the done marker, or an error when the shell exits first (a failed
// block under set -e) or the block takes too long.
func (sh *shell) run(what, command string) (string, error) {
	if _, err := fmt.Fprintf(sh.stdin, "%s\necho %s $?\n", command, doneMarker); err != nil {
		return "", fmt.Errorf("the shell is gone: %w", err)
	}
	var out strings.Builder
	timeout := time.NewTimer(blockTimeout)
	defer timeout.Stop()
	for {
		select {
		case line, ok := <-sh.lines:
			if !ok {
				<-sh.exited
				err := sh.waitErr
				if err == nil {
					err = errors.New("the shell exited")
				}
				return out.String(), fmt.Errorf("bash: %w", err)
			}
			// A block's last output may have no newline.
			if before, status, found := strings.Cut(line, doneMarker+" "); found {
				if before != "" {
					out.WriteString(before + "\n")
				}
				if status != "0" {
					return out.String(), fmt.Errorf("exit status %s", status)
				}
				return out.String(), nil
			}
			out.WriteString(line + "\n")
		case <-timeout.C:
			return out.String(), fmt.Errorf("%s did not finish within %s", what, blockTimeout)
		case <-sh.ctx.Done():
			return out.String(), fmt.Errorf("the walkthrough did not finish within %s", walkthroughTimeout)
		}
	}
}

// stopGroup stops a process group whose leader was started with Setpgid:
// SIGTERM, then SIGKILL if the leader is not reaped (reaped is closed)
// within 20 seconds or the rest of the group is not gone 20 seconds later.
func stopGroup(pgid int, reaped <-chan struct{}) {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-reaped:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-reaped
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// startContainerd starts a containerd of the test's own (root, state and
// socket under dir) when the test runs as root and containerd and ctr are
// installed, and returns its socket.
func startContainerd(t *testing.T, dir string) (string, bool) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Log("not root: the README's ctr commands are not run")
		return "", false
	}
	for _, tool := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Logf("%s is not installed: the README's ctr commands are not run", tool)
			return "", false
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock)
	configFile := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", configFile)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(exited) }()
	t.Cleanup(func() { stopGroup(cmd.Process.Pid, exited) })
	deadline := time.Now().Add(time.Minute)
	for {
		if exec.Command("ctr", "--address", sock, "version").Run() == nil {
			return sock, true
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Fatalf("containerd exited:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("containerd did not answer within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// gitClone clones the HEAD of the checkout this test is in into dir.
func gitClone(t *testing.T, dir string) {
	t.Helper()
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		testenv.Missing(t, "not in a git checkout (%v): the walkthrough runs in a fresh clone", err)
	}
	if out, err := exec.Command("git", "clone", "--quiet", strings.TrimSpace(string(top)), dir).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
}

// freeAddress returns a loopback address no one listens on now.
func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// cleanEnv is the test's environment without the settings a user's
// machine may have for sluice, which the walkthrough does not expect.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") && !strings.HasPrefix(kv, "CONTAINERD_") {
			env = append(env, kv)
		}
	}
	return env
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		testenv.Missing(t, "go env %s: %v (the walkthrough builds with go)", name, err)
	}
	return strings.TrimSpace(string(out))
}

// lookPath finds a program on the given PATH.
func lookPath(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if info, err := os.Stat(p); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}
