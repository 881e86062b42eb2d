package metadata

import (
	"context"
	"database/sql"
	"math"
	"strconv"
	"strings"
)

// The store's SQL is written once, in the subset SQLite and PostgreSQL
// share, with ? placeholders. What differs between them is here: the
// placeholder syntax, which PostgreSQL spells $1, $2..., and in store.go
// and postgres.go how transactions begin and retry.
type dialect int

const (
	sqlite dialect = iota
	postgres
)

func (d dialect) String() string {
	if d == postgres {
		return "postgres"
	}
	return "sqlite"
}

// query returns q in the dialect's placeholder syntax. A query without
// arguments is left alone: it has no placeholders, and a migration's text
// may hold a '?' in a comment.
func (d dialect) query(q string, args []any) string {
	if d != postgres || len(args) == 0 {
		return q
	}
	return numberPlaceholders(q)
}

// numberPlaceholders replaces each ? outside quoted strings, identifiers
// and comments with $1, $2... in order.
func numberPlaceholders(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'' || c == '"':
			end := strings.IndexByte(q[i+1:], c)
			if end < 0 {
				b.WriteString(q[i:])
				return b.String()
			}
			b.WriteString(q[i : i+end+2])
			i += end + 1
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			end := strings.IndexByte(q[i:], '\n')
			if end < 0 {
				b.WriteString(q[i:])
				return b.String()
			}
			b.WriteString(q[i : i+end+1])
			i += end
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// runner is what a pool (*sql.DB) and a transaction (*sql.Tx) share.
type runner interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// txn is a pool or a transaction that takes queries in the store's SQL.
type txn struct {
	r runner
	d dialect
}

func (t *txn) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.r.QueryContext(ctx, t.d.query(q, args), args...)
}

func (t *txn) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.r.QueryRowContext(ctx, t.d.query(q, args), args...)
}

func (t *txn) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.r.ExecContext(ctx, t.d.query(q, args), args...)
}

// sqlLimit is the LIMIT for at most n rows, n < 0 meaning all of them:
// SQLite takes -1 for that, PostgreSQL refuses a negative limit.
func sqlLimit(n int) int64 {
	if n < 0 {
		return math.MaxInt64
	}
	return int64(n)
}
