// Package testbackend starts, for a package's tests, the servers the shared
// backends run on (PostgreSQL, an Azure Blob Storage emulator, an S3
// server): each at most once per test binary, on a free loopback port with
// a throw-away data directory, and stopped when the binary's tests end.
// Every test gets its own database, container or bucket on them.
//
// A package that uses it runs its tests through Main:
//
//	func TestMain(m *testing.M) { testbackend.Main(m) }
//
// A server that cannot start (its program missing) is testenv's business:
// the test is skipped under a developer's `go test` and fails under
// `make test`, which installs every program.
//
// Programs that are not tests (the benchmarks) start the same servers with
// StartPostgres, StartAzurite and StartS3, and stop them themselves.
package testbackend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// Main runs the package's tests, then stops every server they started and
// removes its data.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main for a TestMain that does more around the tests: it returns
// their exit code.
func Run(m *testing.M) int {
	defer stopAll()
	return m.Run()
}

var (
	mu      sync.Mutex
	running []*server
	// stops are the Stop functions of the servers started once per binary.
	stops []func()
)

// atExit has Main stop a server started once per binary.
func atExit(stop func()) {
	mu.Lock()
	defer mu.Unlock()
	stops = append(stops, stop)
}

// server is a started backend process and the directory it keeps its data
// in.
type server struct {
	name string
	cmd  *exec.Cmd
	dir  string
	// stop asks the server to exit, when SIGTERM is not the way.
	stop func() error
	done chan struct{}
	log  *os.File
}

// stopAll stops the servers started once per binary, then any other still
// running (a test's own whose cleanup never ran).
func stopAll() {
	mu.Lock()
	toStop := stops
	stops = nil
	mu.Unlock()
	for i := len(toStop) - 1; i >= 0; i-- {
		toStop[i]()
	}
	mu.Lock()
	defer mu.Unlock()
	for i := len(running) - 1; i >= 0; i-- {
		running[i].shutdown()
	}
	running = nil
}

// ErrNotInstalled is wrapped by the error of a Start function whose
// server's program is not on this machine.
var ErrNotInstalled = errors.New("server program not installed")

type notInstalledError string

func (e notInstalledError) Error() string        { return string(e) }
func (e notInstalledError) Is(target error) bool { return target == ErrNotInstalled }

// notInstalled says which program is missing, where it was looked for and
// how to install it.
func notInstalled(msg string) error { return notInstalledError(msg) }

// need ends t if a server it needs did not start: a missing program is
// testenv's business (skipped, or failed under make test), anything else
// fails the test.
func need(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrNotInstalled) {
		testenv.Missing(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (s *server) shutdown() {
	if s.cmd != nil && s.cmd.Process != nil {
		select {
		case <-s.done:
		default:
			stop := s.stop
			if stop == nil {
				stop = func() error { return s.cmd.Process.Signal(syscall.SIGTERM) }
			}
			if err := stop(); err != nil {
				fmt.Fprintf(os.Stderr, "testbackend: stop %s: %v\n", s.name, err)
			}
			select {
			case <-s.done:
			case <-time.After(10 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.done
			}
		}
	}
	if s.log != nil {
		s.log.Close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// start runs cmd as a server whose output goes to a log file in dir, and
// registers it to be stopped by Main. The process dies with the test binary
// even if Main never runs (a panic, a timeout's kill).
func start(name, dir string, cmd *exec.Cmd) (*server, error) {
	log, err := os.Create(dir + "/" + name + ".log")
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, cmd: cmd, dir: dir, done: make(chan struct{}), log: log}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	mu.Lock()
	running = append(running, s)
	mu.Unlock()
	return s, nil
}

// exited reports, for a server that is not answering, whether its process
// ended, with the end of its log.
func (s *server) exited() error {
	select {
	case <-s.done:
		return fmt.Errorf("%s exited (%v); its log:\n%s", s.name, s.cmd.ProcessState, s.tail())
	default:
		return nil
	}
}

func (s *server) tail() string {
	b, _ := os.ReadFile(s.log.Name())
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// waitReady polls ready until it succeeds, the server exits, or a minute
// passes.
func (s *server) waitReady(ready func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var last error
	for {
		if err := s.exited(); err != nil {
			return err
		}
		attempt, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
		last = ready(attempt)
		cancelAttempt()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after a minute: %w; its log:\n%s", s.name, errors.Join(last, ctx.Err()), s.tail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePort returns a loopback port nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// once starts a backend the first time a test asks for it and remembers the
// outcome, failure included, for every later test of the binary.
type once[T any] struct {
	once sync.Once
	val  T
	err  error
}

func (o *once[T]) get(startFn func() (T, error)) (T, error) {
	o.once.Do(func() { o.val, o.err = startFn() })
	return o.val, o.err
}

// shared is the binary's server that o holds, started by startFn the first
// time and stopped by Main.
func shared[T interface{ Stop() }](o *once[T], startFn func() (T, error)) (T, error) {
	return o.get(func() (T, error) {
		srv, err := startFn()
		if err == nil {
			atExit(srv.Stop)
		}
		return srv, err
	})
}

// uniqueName returns a name for a test's database, container or bucket:
// lower-case letters and digits, unique within the binary's run.
func uniqueName(prefix string) string {
	mu.Lock()
	defer mu.Unlock()
	counter++
	return fmt.Sprintf("%s%d", prefix, counter)
}

var counter int
