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

	"github.com/sluicehq/sluice/internal/testenv"
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
	azurite once[int]
	s3      once[int]
)

// Azurite returns a gocloud URL of a container, unique to the test, on the
// binary's Azure Blob Storage emulator, starting it the first time. The
// container does not exist yet: opening the URL makes it. The emulator's
// account and key are in the process's environment from then on.
func Azurite(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(toolsDir(), "azurite", "node_modules", ".bin")
	prog := program("azurite-blob", dir)
	testenv.Need(t, prog != "", "azurite-blob not found (on PATH or in %s); make test-deps installs it", dir)
	port, err := azurite.get(func() (int, error) { return startAzurite(prog) })
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("azblob://%s?protocol=http&domain=127.0.0.1:%d&localemu=true", uniqueName("sluicetest"), port)
}

// S3 returns a gocloud URL of a bucket, unique to the test, on the
// binary's S3 server (versitygw over a directory), starting it the first
// time. The bucket does not exist yet: opening the URL makes it. The
// server's credentials and region are in the process's environment from
// then on.
func S3(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(goPath(), "bin")
	prog := program("versitygw", dir)
	testenv.Need(t, prog != "", "versitygw not found (on PATH or in %s); make test-deps installs it", dir)
	port, err := s3.get(func() (int, error) { return startS3(prog) })
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("s3://%s?endpoint=http://127.0.0.1:%d&use_path_style=true", uniqueName("sluicetest"), port)
}

func startAzurite(prog string) (int, error) {
	dir, err := os.MkdirTemp("", "sluice-azurite-")
	if err != nil {
		return 0, err
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return 0, err
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		os.RemoveAll(dir)
		return 0, err
	}
	// --skipApiVersionCheck: the Azure SDK speaks a newer API version than
	// this Azurite knows, and Azurite refuses such requests otherwise; the
	// operations the store uses are older than either.
	cmd := exec.Command(prog, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		"--location", data, "--disableTelemetry", "--skipApiVersionCheck", "--silent")
	s, err := start("azurite", dir, cmd)
	if err != nil {
		os.RemoveAll(dir)
		return 0, err
	}
	os.Setenv("AZURE_STORAGE_ACCOUNT", azuriteAccount)
	os.Setenv("AZURE_STORAGE_KEY", azuriteKey)
	return port, s.waitReady(answers(fmt.Sprintf("http://127.0.0.1:%d/%s?comp=list", port, azuriteAccount)))
}

func startS3(prog string) (int, error) {
	dir, err := os.MkdirTemp("", "sluice-s3-")
	if err != nil {
		return 0, err
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return 0, err
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		os.RemoveAll(dir)
		return 0, err
	}
	cmd := exec.Command(prog, "--port", fmt.Sprintf("127.0.0.1:%d", port),
		"--access", s3AccessKey, "--secret", s3SecretKey, "--region", s3Region, "--quiet",
		"posix", data)
	s, err := start("versitygw", dir, cmd)
	if err != nil {
		os.RemoveAll(dir)
		return 0, err
	}
	os.Setenv("AWS_ACCESS_KEY_ID", s3AccessKey)
	os.Setenv("AWS_SECRET_ACCESS_KEY", s3SecretKey)
	os.Setenv("AWS_REGION", s3Region)
	return port, s.waitReady(answers(fmt.Sprintf("http://127.0.0.1:%d/", port)))
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
// it; "" if neither has it.
func program(name, dir string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p := filepath.Join(dir, name)
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return p
	}
	return ""
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
