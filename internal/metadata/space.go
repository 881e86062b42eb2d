package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/sluicehq/sluice/internal/atomicfile"
	moderncsqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteDriver is the name of the SQLite driver the store opens databases
// with: modernc's, whose connections keep the write-ahead log and its
// shared-memory index when they close (SQLITE_FCNTL_PERSIST_WAL). Without
// them, the next open must create both, and on a full disk it fails
// ("disk I/O error"), so that a registry stopped cleanly could not start
// again to serve pulls. Their space is reused: the log is checkpointed and
// written again from its start.
const sqliteDriver = "sluice-sqlite"

func init() {
	d := &moderncsqlite.Driver{}
	d.RegisterConnectionHook(func(conn moderncsqlite.ExecQuerierContext, _ string) error {
		fc, ok := conn.(moderncsqlite.FileControl)
		if !ok {
			return errors.New("the SQLite connection has no file control")
		}
		_, err := fc.FileControlPersistWAL("main", 1)
		return err
	})
	sql.Register(sqliteDriver, d)
}

// ErrDatabaseFull is the cause NoSpace gives for a database that could not
// write for lack of space: SQLite's SQLITE_FULL, PostgreSQL's disk_full.
var ErrDatabaseFull = errors.New("database or disk is full")

// NoSpace returns why err is a write that failed for lack of space
// (ErrDatabaseFull, or the system's ENOSPC or EDQUOT), or nil when it is
// not. The cause names no file, so that it can be told to clients.
func NoSpace(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrDatabaseFull) {
		return ErrDatabaseFull
	}
	if se, ok := errors.AsType[*moderncsqlite.Error](err); ok && se.Code()&0xff == sqlite3.SQLITE_FULL {
		return ErrDatabaseFull
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "53100" {
		return ErrDatabaseFull
	}
	for _, errno := range []error{syscall.ENOSPC, syscall.EDQUOT} {
		if errors.Is(err, errno) {
			return errno
		}
	}
	return nil
}

// noSpaceErr names the database file in a write that failed for lack of
// space, for the log of whoever reads it; other errors pass unchanged.
func (s *Store) noSpaceErr(err error) error {
	if s.file == "" || NoSpace(err) == nil {
		return err
	}
	return fmt.Errorf("metadata database %s: %w", s.file, err)
}

// ProbeWrite checks that the database can take writes now. For SQLite it
// probes the directory of the database (the space its write-ahead log
// grows into) with atomicfile.Probe; its error names the file and the
// system's cause. PostgreSQL's server manages its own
// disk: it is not probed, and its writes report disk_full themselves.
func (s *Store) ProbeWrite(ctx context.Context) error {
	if s.file == "" {
		return nil
	}
	return atomicfile.Probe(ctx, filepath.Dir(s.file))
}

// Path is the database file of an SQLite store, empty for PostgreSQL.
func (s *Store) Path() string { return s.file }
