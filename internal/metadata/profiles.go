package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// StartupProfile returns the stored profile of a blob (its ranges as the
// JSON they were stored as) and when it was stored, or ErrNotFound.
func (s *Store) StartupProfile(ctx context.Context, dgst string) (ranges []byte, updated time.Time, err error) {
	var at int64
	err = s.read.QueryRowContext(ctx, `SELECT ranges, updated_at FROM startup_profiles WHERE digest = ?`, dgst).Scan(&ranges, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, time.Time{}, fmt.Errorf("startup profile of %s: %w", dgst, ErrNotFound)
	}
	return ranges, time.Unix(0, at), err
}

// PutStartupProfile stores (replacing) the profile of a live blob.
func (s *Store) PutStartupProfile(ctx context.Context, dgst string, ranges []byte) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		var state int
		err := tx.QueryRowContext(ctx, `SELECT state FROM blobs WHERE digest = ?`, dgst).Scan(&state)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("startup profile of %s: %w", dgst, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if state != blobLive {
			return fmt.Errorf("startup profile of %s: %w", dgst, ErrBlobDeleting)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO startup_profiles(digest, ranges, updated_at) VALUES (?, ?, ?)
			ON CONFLICT(digest) DO UPDATE SET ranges = excluded.ranges, updated_at = excluded.updated_at`, dgst, string(ranges), s.nowNano())
		return err
	})
}

// DeleteStartupProfile removes the profile of a blob; ErrNotFound when
// there is none.
func (s *Store) DeleteStartupProfile(ctx context.Context, dgst string) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM startup_profiles WHERE digest = ?`, dgst)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("startup profile of %s: %w", dgst, ErrNotFound)
		}
		return nil
	})
}
