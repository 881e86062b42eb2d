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
	"time"

	"github.com/jackc/pgx/v5"
)

// pgUser is the superuser of the test cluster.
const pgUser = "sluice"

var postgres once[*PostgresServer]

type pgServer struct {
	*server
	bin, dir string
	port     int
	// cred is the postgres user's, when the tests run as root.
	cred *syscall.Credential
}

// Postgres returns the DSN of a new, empty database on the binary's
// PostgreSQL server, starting the server the first time.
func Postgres(t testing.TB) string {
	t.Helper()
	srv, err := shared(&postgres, StartPostgres)
	need(t, err)
	dsn, err := srv.NewDatabase()
	if err != nil {
		t.Fatal(err)
	}
	return dsn
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
	p := &pgServer{bin: bin, dir: dir}
	if err := p.initCluster(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if p.port, err = freePort(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := p.run(); err != nil {
		if p.server != nil {
			p.server.shutdown()
		}
		os.RemoveAll(dir)
		return nil, err
	}
	return p, nil
}

func (p *pgServer) initCluster() error {
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root, PostgreSQL needs its own user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(p.dir, uid, gid); err != nil {
			return err
		}
	}
	initdb := exec.Command(filepath.Join(p.bin, "initdb"), "-D", filepath.Join(p.dir, "data"), "-U", pgUser, "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	return nil
}

// run starts the server on the cluster and waits until it takes
// connections.
func (p *pgServer) run() error {
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), "-D", filepath.Join(p.dir, "data"), "-p", strconv.Itoa(p.port), "-k", p.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	s, err := start("postgres", p.dir, cmd)
	if err != nil {
		return err
	}
	if p.cred != nil {
		_ = s.log.Chown(int(p.cred.Uid), int(p.cred.Gid))
	}
	// A fast shutdown: ends sessions, then the server writes its last
	// checkpoint and exits.
	s.stop = func() error { return s.cmd.Process.Signal(syscall.SIGINT) }
	// The data outlives this run of the server: Restart starts another.
	s.dir = ""
	p.server = s
	return s.waitReady(func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, p.dsn("postgres"))
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	})
}

// PostgresServer is a PostgreSQL server on a free loopback port with a
// throw-away cluster, which may be stopped and started again.
type PostgresServer struct {
	p *pgServer
	// DSN is the URL of the database OwnPostgres made for its test.
	DSN string
}

// StartPostgres makes a cluster in a new directory and starts PostgreSQL on
// it; Stop ends the server and removes the cluster. The error wraps
// ErrNotInstalled when PostgreSQL's programs are not on this machine.
func StartPostgres() (*PostgresServer, error) {
	bin := pgBinDir()
	if bin == "" {
		return nil, notInstalled("PostgreSQL's initdb not found (in /usr/lib/postgresql/*/bin or on PATH); make test-deps installs postgresql")
	}
	p, err := startPostgres(bin)
	if err != nil {
		return nil, err
	}
	return &PostgresServer{p: p}, nil
}

// NewDatabase creates an empty database with a name of its own and returns
// its URL.
func (pg *PostgresServer) NewDatabase() (string, error) {
	name := uniqueName("sluice_test_")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.p.dsn("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return pg.p.dsn(name), nil
}

// Stop ends the server and removes its cluster.
func (pg *PostgresServer) Stop() {
	pg.p.server.shutdown()
	os.RemoveAll(pg.p.dir)
}

// OwnPostgres starts a PostgreSQL server for t alone, with one empty
// database, and stops it when t ends.
func OwnPostgres(t testing.TB) *PostgresServer {
	t.Helper()
	pg, err := StartPostgres()
	need(t, err)
	t.Cleanup(pg.Stop)
	if pg.DSN, err = pg.NewDatabase(); err != nil {
		t.Fatal(err)
	}
	return pg
}

// Restart stops the server as an operator's restart does (ending every
// session), keeps it down for down, and starts it again on the same port
// and data.
func (pg *PostgresServer) Restart(t testing.TB, down time.Duration) {
	t.Helper()
	pg.p.server.shutdown()
	time.Sleep(down)
	if err := pg.p.run(); err != nil {
		t.Fatal(err)
	}
}
