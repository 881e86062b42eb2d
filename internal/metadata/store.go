// Package metadata keeps the registry's metadata in SQL: repositories, blob
// records and links, manifests, tags, the referrers index and upload
// sessions. SQLite in the data directory is the embedded default.
//
// The store persists and enforces referential integrity inside its
// transactions; deciding what is allowed is the registry service's job. It
// never imports net/http.
//
// Its consumers each declare the methods they use (registry.Store,
// conversion.Store, auth.IdentityStore), and storetest says what any
// backend must do for them; the SQLite store runs it.
package metadata

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jackc/pgx/v5"
)

// Sentinel errors. Callers wrap or map them; they carry no HTTP meaning.
var (
	ErrNotFound        = errors.New("not found")
	ErrBlobDeleting    = errors.New("blob is being garbage collected")
	ErrUploadConflict  = errors.New("upload changed concurrently")
	ErrMissingBlob     = errors.New("referenced blob not in repository")
	ErrMissingManifest = errors.New("referenced manifest not in repository")
	ErrSizeMismatch    = errors.New("descriptor size does not match stored blob")
)

//go:embed migrations
var migrations embed.FS

// Store is the metadata database. Reads go through a pool of connections;
// writes go through a single connection so SQLite never has to arbitrate
// between writers (it serialises them anyway) and write transactions start
// with the write lock held.
type Store struct {
	// read takes the reads; readDB is its pool (write's, on
	// PostgreSQL).
	read    *txn
	readDB  *sql.DB
	write   *sql.DB
	dialect dialect
	now     func() time.Time
	// payloads caches manifest payloads by digest (GetManifest).
	payloads *lru.Cache[string, []byte]
	// pgConfig is the connection's configuration on PostgreSQL, for the
	// connection that listens for changes (Subscribe).
	pgConfig *pgx.ConnConfig
	// file is the database file of SQLite, empty on PostgreSQL.
	file string
}

// newStore is a store of dialect d over the pools read and write.
func newStore(read, write *sql.DB, d dialect, opts []Option) *Store {
	payloads, _ := lru.New[string, []byte](payloadCacheEntries)
	s := &Store{write: write, dialect: d, now: time.Now, payloads: payloads}
	if read != nil {
		s.read, s.readDB = &txn{r: read, d: d}, read
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Option tunes a store being opened.
type Option func(*Store)

// WithClock gives the store a clock other than time.Now; tests use it to
// age records.
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// OpenSQLite opens (creating if needed) the SQLite database at file and
// brings its schema up to date.
func OpenSQLite(ctx context.Context, file string, opts ...Option) (*Store, error) {
	pragmas := []string{"journal_mode(WAL)", "synchronous(NORMAL)", "foreign_keys(1)", "busy_timeout(10000)"}
	q := url.Values{}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	// As a URI path, a file name may hold '?', '#' or '%' and still be
	// that file.
	dsn := "file:" + (&url.URL{Path: file}).EscapedPath() + "?" + q.Encode()
	write, err := sql.Open(sqliteDriver, dsn+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open metadata database %s: %w", file, err)
	}
	write.SetMaxOpenConns(1)
	write.SetConnMaxIdleTime(0)
	s := newStore(nil, write, sqlite, opts)
	s.file = file
	if err := s.migrate(ctx); err != nil {
		write.Close()
		return nil, openError(file, err)
	}
	read, err := sql.Open(sqliteDriver, dsn+"&_pragma=query_only(1)")
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open metadata database %s: %w", file, err)
	}
	read.SetMaxOpenConns(16)
	read.SetMaxIdleConns(16)
	s.read, s.readDB = &txn{r: read, d: sqlite}, read
	return s, nil
}

// openError names the database file in a failure to open it, with the
// cause the system gives where there is one: SQLite says only "unable to
// open database file" of a file it may not create or of a directory where
// its write-ahead log may not go.
func openError(file string, err error) error {
	if cause := checkWritable(file); cause != nil {
		return fmt.Errorf("open metadata database: %w", cause)
	}
	return fmt.Errorf("open metadata database %s: %w", file, err)
}

// checkWritable does what SQLite needs of the file system: open the
// database file for writing, creating it, and create a file beside it.
// Its error is the system's, which names the path and the cause.
func checkWritable(file string) error {
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	probe, err := os.CreateTemp(filepath.Dir(file), ".sluice-probe-*")
	if err != nil {
		return err
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// Close releases the database connections.
func (s *Store) Close() error {
	if s.readDB == s.write {
		return s.write.Close()
	}
	return errors.Join(s.readDB.Close(), s.write.Close())
}

func (s *Store) nowNano() int64 { return s.now().UnixNano() }

// migrate applies, in order, the embedded migrations of the store's dialect
// newer than the database's recorded version, all in one transaction. On
// PostgreSQL the transaction first takes an advisory lock, so that of
// several replicas starting at once one migrates and the others, waiting
// on the lock, then find nothing left to do.
func (s *Store) migrate(ctx context.Context) error {
	dir := path.Join("migrations", s.dialect.String())
	entries, err := fs.ReadDir(migrations, dir)
	if err != nil {
		return fmt.Errorf("read migrations: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sql") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	// Read committed on PostgreSQL: each statement sees what was committed
	// before it began, so the version is read after the lock is held.
	var opts *sql.TxOptions
	if s.dialect == postgres {
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	tx, err := s.write.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	t := &txn{r: tx, d: s.dialect}
	if s.dialect == postgres {
		if _, err := t.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, migrationLock); err != nil {
			return fmt.Errorf("wait for other replicas' migrations: %w", err)
		}
	}
	if _, err := t.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var current int
	if err := t.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	for _, name := range names {
		version, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with a number", name)
		}
		if version <= current {
			continue
		}
		body, err := migrations.ReadFile(path.Join(dir, name))
		if err != nil {
			return err
		}
		if _, err := t.ExecContext(ctx, string(body)); err != nil {
			return fmt.Errorf("apply migration %s: %w", name, err)
		}
		if _, err := t.ExecContext(ctx, `INSERT INTO schema_migrations(version, applied_at) VALUES (?, ?)`, version, s.nowNano()); err != nil {
			return fmt.Errorf("apply migration %s: %w", name, err)
		}
	}
	return tx.Commit()
}

// migrationLock is the key of the advisory lock migrations hold on
// PostgreSQL: "sluice" in ASCII.
const migrationLock int64 = 0x736c75696365

// inTx runs fn in a write transaction, committing if it returns nil. On
// PostgreSQL the transaction is serializable, as every SQLite write
// transaction is, and one that loses a conflict with a concurrent one is
// run again from the start; fn must therefore set its results afresh on
// each run.
func (s *Store) inTx(ctx context.Context, fn func(tx *txn) error) error {
	if s.dialect == postgres {
		return s.retrySerializable(ctx, fn)
	}
	return s.runTx(ctx, nil, fn)
}

// inQueueTx runs fn in a transaction that takes work from a queue table.
// On PostgreSQL it is read committed and fn's query locks the row it takes
// with skipLocked, so that workers claiming at once each take a different
// row instead of waiting on or conflicting with each other; SQLite's one
// writer needs no such clause.
func (s *Store) inQueueTx(ctx context.Context, fn func(tx *txn, skipLocked string) error) error {
	if s.dialect == postgres {
		return s.runTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted}, func(tx *txn) error {
			return fn(tx, "FOR UPDATE SKIP LOCKED")
		})
	}
	return s.runTx(ctx, nil, func(tx *txn) error { return fn(tx, "") })
}

func (s *Store) runTx(ctx context.Context, opts *sql.TxOptions, fn func(tx *txn) error) error {
	tx, err := s.write.BeginTx(ctx, opts)
	if err != nil {
		return s.noSpaceErr(err)
	}
	if err := fn(&txn{r: tx, d: s.dialect}); err != nil {
		_ = tx.Rollback()
		return s.noSpaceErr(err)
	}
	return s.noSpaceErr(tx.Commit())
}

// ensureRepository returns the id of the named repository, creating it.
func (s *Store) ensureRepository(ctx context.Context, tx *txn, name string) (int64, error) {
	now := s.nowNano()
	var id int64
	err := tx.QueryRowContext(ctx, `INSERT INTO repositories(name, created_at, updated_at) VALUES (?, ?, ?)
		ON CONFLICT(name) DO UPDATE SET updated_at = excluded.updated_at RETURNING id`, name, now, now).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("ensure repository %s: %w", name, err)
	}
	return id, nil
}

// repositoryID looks up a repository without creating it.
func repositoryID(ctx context.Context, q queryer, name string) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, `SELECT id FROM repositories WHERE name = ?`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("repository %s: %w", name, ErrNotFound)
	}
	return id, err
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}
