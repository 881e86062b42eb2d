package testbackend

import (
	"context"
	"fmt"
	"go/build"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The account every Azurite serves, with its published key. The Azure SDK
// reads them from the environment, as it would a real account's.
const (
	azuriteAccount = "devstoreaccount1"
	azuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// The S3 server's root credentials and region, given to the AWS SDK
// through the environment as an operator would.
const (
	s3AccessKey = "sluicetest"
	s3SecretKey = "sluicetest-secret"
	s3Region    = "us-east-1"
)

var (
	azurite once[*AzuriteServer]
	s3      once[*S3Server]
)

// Azurite returns a gocloud URL of a container, unique to the test, on the
// binary's Azure Blob Storage emulator, starting it the first time. The
// container does not exist yet: opening the URL makes it. The emulator's
// account and key are in the process's environment from then on.
func Azurite(t testing.TB) string {
	t.Helper()
	az, err := shared(&azurite, StartAzurite)
	need(t, err)
	return az.NewContainer()
}

// S3 returns a gocloud URL of a bucket, unique to the test, on the
// binary's S3 server (versitygw over a directory), starting it the first
// time. The bucket does not exist yet: opening the URL makes it. The
// server's credentials and region are in the process's environment from
// then on.
func S3(t testing.TB) string {
	t.Helper()
	srv, err := shared(&s3, StartS3)
	need(t, err)
	return srv.NewBucket()
}

// AzuriteServer is an Azure Blob Storage emulator (Azurite) on a free
// loopback port with a throw-away data directory.
type AzuriteServer struct {
	s    *server
	port int
}

// StartAzurite starts Azurite and puts its account and key in the
// process's environment, where the Azure SDK, and any program started from
// here, read them. The error wraps ErrNotInstalled when Azurite is not on
// this machine.
func StartAzurite() (*AzuriteServer, error) {
	prog, err := program("azurite-blob", filepath.Join(toolsDir(), "azurite", "node_modules", ".bin"))
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	// --skipApiVersionCheck: the Azure SDK speaks a newer API version than
	// this Azurite knows, and Azurite refuses such requests otherwise; the
	// operations the store uses are older than either.
	s, err := startWithData("azurite", "sluice-azurite-", func(data string) *exec.Cmd {
		return exec.Command(prog, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
			"--location", data, "--disableTelemetry", "--skipApiVersionCheck", "--silent")
	}, answers(fmt.Sprintf("http://127.0.0.1:%d/%s?comp=list", port, azuriteAccount)))
	if err != nil {
		return nil, err
	}
	os.Setenv("AZURE_STORAGE_ACCOUNT", azuriteAccount)
	os.Setenv("AZURE_STORAGE_KEY", azuriteKey)
	return &AzuriteServer{s: s, port: port}, nil
}

// NewContainer returns a gocloud URL of a container with a name of its
// own. The container does not exist yet: opening the URL makes it.
func (a *AzuriteServer) NewContainer() string {
	return fmt.Sprintf("azblob://%s?protocol=http&domain=127.0.0.1:%d&localemu=true", uniqueName("sluicetest"), a.port)
}

// Stop ends the emulator and removes its data.
func (a *AzuriteServer) Stop() { a.s.shutdown() }

// S3Server is an S3 server (versitygw over a directory) on a free loopback
// port with a throw-away data directory.
type S3Server struct {
	s    *server
	port int
}

// StartS3 starts versitygw and puts its credentials and region in the
// process's environment, where the AWS SDK, and any program started from
// here, read them. The error wraps ErrNotInstalled when versitygw is not on
// this machine.
func StartS3() (*S3Server, error) {
	prog, err := program("versitygw", filepath.Join(goPath(), "bin"))
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s, err := startWithData("versitygw", "sluice-s3-", func(data string) *exec.Cmd {
		return exec.Command(prog, "--port", fmt.Sprintf("127.0.0.1:%d", port),
			"--access", s3AccessKey, "--secret", s3SecretKey, "--region", s3Region, "--quiet",
			"posix", data)
	}, answers(fmt.Sprintf("http://127.0.0.1:%d/", port)))
	if err != nil {
		return nil, err
	}
	os.Setenv("AWS_ACCESS_KEY_ID", s3AccessKey)
	os.Setenv("AWS_SECRET_ACCESS_KEY", s3SecretKey)
	os.Setenv("AWS_REGION", s3Region)
	return &S3Server{s: s, port: port}, nil
}

// NewBucket returns a gocloud URL of a bucket with a name of its own. The
// bucket does not exist yet: opening the URL makes it.
func (srv *S3Server) NewBucket() string {
	return fmt.Sprintf("s3://%s?endpoint=http://127.0.0.1:%d&use_path_style=true", uniqueName("sluicetest"), srv.port)
}

// Stop ends the server and removes its data.
func (srv *S3Server) Stop() { srv.s.shutdown() }

// startWithData runs the server command makes for a new data directory,
// in a temporary directory that also holds its log and goes when it stops,
// and waits until it is ready.
func startWithData(name, pattern string, command func(data string) *exec.Cmd, ready func(ctx context.Context) error) (*server, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s, err := start(name, dir, command(data))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.waitReady(ready); err != nil {
		s.shutdown()
		return nil, err
	}
	return s, nil
}

// answers is ready once url gets any HTTP answer: the server is serving,
// and whether it grants the unsigned request does not matter.
func answers(url string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
}

// program finds name on PATH, or else in dir, where make test-deps puts
// it; the error wraps ErrNotInstalled if neither has it.
func program(name, dir string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := filepath.Join(dir, name)
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return p, nil
	}
	return "", notInstalled(fmt.Sprintf("%s not found (on PATH or in %s); make test-deps installs it", name, dir))
}

// toolsDir is where make test-deps installs what is neither a Debian
// package nor a Go program.
func toolsDir() string { return filepath.Join(goPath(), "sluice-test-tools") }

// goPath is the directory go install writes into: the first of GOPATH as
// the go command sees it, which also counts `go env -w`.
var goPath = sync.OnceValue(func() string {
	gopath := build.Default.GOPATH
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		gopath = strings.TrimSpace(string(out))
	}
	if dirs := filepath.SplitList(gopath); len(dirs) > 0 {
		return dirs[0]
	}
	return gopath
})
