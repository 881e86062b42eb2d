package metadata

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// OpenPostgres connects to the PostgreSQL database dsn (a postgres:// URL
// or key=value string, as libpq takes) and brings its schema up to date.
// Several processes may share the database: migrations run once under an
// advisory lock, and every write transaction is serializable.
func OpenPostgres(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors repeat the DSN, password included.
		return nil, errors.New("metadata database DSN: not a PostgreSQL connection string (postgres://user:password@host:5432/db?sslmode=disable)")
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	db.SetConnMaxIdleTime(5 * time.Minute)
	s := newStore(db, db, postgres, opts)
	s.pgConfig = cfg
	where := fmt.Sprintf("%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to metadata database %s: %w", where, err)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("metadata database %s: %w", where, err)
	}
	return s, nil
}

// retrySerializable runs fn in a serializable transaction, again while
// PostgreSQL aborts it for a conflict with a concurrent one (or a
// deadlock), with a short random pause between tries.
func (s *Store) retrySerializable(ctx context.Context, fn func(tx *txn) error) error {
	opts := &sql.TxOptions{Isolation: sql.LevelSerializable}
	for attempt := 1; ; attempt++ {
		err := s.runTx(ctx, opts, fn)
		if err == nil || !retryable(err) || attempt == 50 {
			return err
		}
		pause := time.Duration(rand.Int64N(int64(attempt)*int64(2*time.Millisecond) + 1))
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(pause):
		}
	}
}

// retryable reports whether err is PostgreSQL's verdict that the
// transaction lost to a concurrent one and may succeed if run again, or a
// connection found closed before anything of the transaction was sent (a
// pooled connection the server ended, as it does to all of them when it
// restarts).
func retryable(err error) bool {
	if pgconn.SafeToRetry(err) {
		return true
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "40001", // serialization_failure
		"40P01": // deadlock_detected
		return true
	}
	return false
}

// Unavailable reports whether err is the database's failure to answer (a
// PostgreSQL server that is down, restarting or refusing connections, or
// a connection lost on the way), which may pass by waiting, rather than an
// answer to the query.
func Unavailable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	// A network failure; not any error with a Timeout method, which a
	// local file's syscall.Errno has too.
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return true
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		// Class 08, connection exception; 57P01-57P03, the server shutting
		// down or starting; 53300, too many connections.
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P") || pgErr.Code == "53300"
	}
	return pgconn.Timeout(err)
}
