package testbackend

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/internal/testenv"
)

// pgUser is the superuser of the test cluster.
const pgUser = "sluice"

var postgres once[*pgServer]

type pgServer struct {
	*server
	port int
}

// Postgres returns the DSN of a new, empty database on the binary's
// PostgreSQL server, starting the server the first time.
func Postgres(t testing.TB) string {
	t.Helper()
	bin := pgBinDir()
	testenv.Need(t, bin != "", "PostgreSQL's initdb not found (in /usr/lib/postgresql/*/bin or on PATH); make test-deps installs postgresql")
	srv, err := postgres.get(func() (*pgServer, error) { return startPostgres(bin) })
	if err != nil {
		t.Fatal(err)
	}
	name := uniqueName("sluice_test_")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, srv.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	return srv.dsn(name)
}

// dsn is the URL of database db on the server.
func (p *pgServer) dsn(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", pgUser, p.port, db)
}

// pgBinDir finds the directory of PostgreSQL's server programs: Debian
// keeps them out of PATH, one directory per major version.
func pgBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

func pgMajor(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// startPostgres makes a cluster in a new directory and starts it on a free
// loopback port, tuned for throw-away data: no fsync. PostgreSQL refuses to
// run as root, so under root the cluster belongs to the postgres user.
func startPostgres(bin string) (*pgServer, error) {
	dir, err := os.MkdirTemp("", "sluice-postgres-")
	if err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root, PostgreSQL needs its own user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", pgUser, "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	s, err := start("postgres", dir, cmd)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if cred != nil {
		_ = s.log.Chown(int(cred.Uid), int(cred.Gid))
	}
	// A fast shutdown: ends sessions, then the server writes its last
	// checkpoint and exits.
	s.stop = func() error { return s.cmd.Process.Signal(syscall.SIGINT) }
	p := &pgServer{server: s, port: port}
	err = s.waitReady(func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, p.dsn("postgres"))
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}
