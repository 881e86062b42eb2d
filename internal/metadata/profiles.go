package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Startup profiles are kept per repository and blob: a layer shared by
// several repositories starts different programs in each, and pull access
// to one repository must not change what nodes pulling another one fetch.

// StartupProfile returns the profile of a blob in a repository (its ranges
// as the JSON they were stored as) and when it was stored, or ErrNotFound.
func (s *Store) StartupProfile(ctx context.Context, repo, dgst string) (ranges []byte, updated time.Time, err error) {
	var at int64
	err = s.read.QueryRowContext(ctx, `SELECT p.ranges, p.updated_at FROM startup_profiles p
		JOIN repositories r ON r.id = p.repository_id WHERE r.name = ? AND p.digest = ?`, repo, dgst).Scan(&ranges, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, time.Time{}, fmt.Errorf("startup profile of %s in %s: %w", dgst, repo, ErrNotFound)
	}
	return ranges, time.Unix(0, at), err
}

// PutStartupProfile stores (replacing) the profile of a live blob linked in
// a repository. The profile goes when the link does.
func (s *Store) PutStartupProfile(ctx context.Context, repo, dgst string, ranges []byte) error {
	return s.inTx(ctx, func(tx *txn) error {
		var id int64
		var state int
		err := tx.QueryRowContext(ctx, `SELECT rb.repository_id, b.state FROM repository_blobs rb
			JOIN repositories r ON r.id = rb.repository_id JOIN blobs b ON b.digest = rb.digest
			WHERE r.name = ? AND rb.digest = ?`, repo, dgst).Scan(&id, &state)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("startup profile of %s in %s: %w", dgst, repo, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if state != blobLive {
			return fmt.Errorf("startup profile of %s: %w", dgst, ErrBlobDeleting)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO startup_profiles(repository_id, digest, ranges, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT(repository_id, digest) DO UPDATE SET ranges = excluded.ranges, updated_at = excluded.updated_at`, id, dgst, string(ranges), s.nowNano())
		return err
	})
}

// DeleteStartupProfile removes the profile of a blob in a repository;
// ErrNotFound when there is none.
func (s *Store) DeleteStartupProfile(ctx context.Context, repo, dgst string) error {
	return s.inTx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM startup_profiles
			WHERE repository_id = (SELECT id FROM repositories WHERE name = ?) AND digest = ?`, repo, dgst)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("startup profile of %s in %s: %w", dgst, repo, ErrNotFound)
		}
		return nil
	})
}
