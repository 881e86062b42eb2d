package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
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
	s := &Store{read: &pool{db: db, d: postgres}, write: db, dialect: postgres, now: time.Now}
	for _, o := range opts {
		o(s)
	}
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
// transaction lost to a concurrent one and may succeed if run again.
func retryable(err error) bool {
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
