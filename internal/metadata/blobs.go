package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Blob states.
const (
	blobLive     = 0
	blobDeleting = 1
)

// TouchBlob records that an object for dgst is about to be written (or is
// about to be linked), which protects it from garbage collection for the
// grace period. It returns ErrBlobDeleting, with the time the collector
// marked it, when a collection of that blob is under way.
func (s *Store) TouchBlob(ctx context.Context, dgst string) (markedAt time.Time, err error) {
	now := s.nowNano()
	err = s.inTx(ctx, func(tx *txn) error {
		var state int
		var touched int64
		err := tx.QueryRowContext(ctx, `INSERT INTO blobs(digest, touched_at) VALUES (?, ?)
			ON CONFLICT(digest) DO UPDATE SET touched_at = CASE WHEN blobs.state = 0 THEN excluded.touched_at ELSE blobs.touched_at END
			RETURNING state, touched_at`, dgst, now).Scan(&state, &touched)
		if err != nil {
			return err
		}
		if state == blobDeleting {
			markedAt = time.Unix(0, touched)
			return ErrBlobDeleting
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrBlobDeleting) {
		err = fmt.Errorf("touch blob %s: %w", dgst, err)
	}
	return markedAt, err
}

// LinkBlob makes a written blob visible in a repository, creating the
// repository on its first blob. The blob must have been touched.
func (s *Store) LinkBlob(ctx context.Context, repo, dgst string, size int64) error {
	return s.inTx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE blobs SET size = ?, touched_at = ? WHERE digest = ? AND state = 0`, size, s.nowNano(), dgst)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("link blob %s: %w", dgst, ErrBlobDeleting)
		}
		return s.insertLink(ctx, tx, repo, dgst)
	})
}

func (s *Store) insertLink(ctx context.Context, tx *txn, repo, dgst string) error {
	id, err := s.ensureRepository(ctx, tx, repo)
	if err != nil {
		return err
	}
	var writable bool
	if err := tx.QueryRowContext(ctx, `SELECT write_enabled FROM repositories WHERE id = ?`, id).Scan(&writable); err != nil {
		return err
	}
	if err := denyUnless("repository "+repo, writable, "writeEnabled"); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO repository_blobs(repository_id, digest, created_at) VALUES (?, ?, ?)
		ON CONFLICT(repository_id, digest) DO UPDATE SET created_at = excluded.created_at`, id, dgst, s.nowNano())
	return err
}

// MountBlob links into repo a blob that repository from already holds, and
// returns its size. ErrNotFound means from does not hold it.
func (s *Store) MountBlob(ctx context.Context, repo, from, dgst string) (size int64, err error) {
	err = s.inTx(ctx, func(tx *txn) error {
		err := tx.QueryRowContext(ctx, `SELECT b.size FROM repository_blobs l
			JOIN repositories r ON r.id = l.repository_id
			JOIN blobs b ON b.digest = l.digest
			WHERE r.name = ? AND l.digest = ? AND b.state = 0 AND r.read_enabled = 1`, from, dgst).Scan(&size)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("blob %s in %s: %w", dgst, from, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE blobs SET touched_at = ? WHERE digest = ?`, s.nowNano(), dgst); err != nil {
			return err
		}
		return s.insertLink(ctx, tx, repo, dgst)
	})
	return size, err
}

// BlobSize returns the size of a blob linked in repo, or ErrNotFound, and
// whether the repository is readable.
func (s *Store) BlobSize(ctx context.Context, repo, dgst string) (size int64, readable bool, err error) {
	err = s.read.QueryRowContext(ctx, `SELECT b.size, r.read_enabled FROM repository_blobs l
		JOIN repositories r ON r.id = l.repository_id
		JOIN blobs b ON b.digest = l.digest
		WHERE r.name = ? AND l.digest = ? AND b.state = 0`, repo, dgst).Scan(&size, &readable)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, fmt.Errorf("blob %s in %s: %w", dgst, repo, ErrNotFound)
	}
	return size, readable, err
}

// UnlinkBlob removes a blob from a repository. The object stays until
// garbage collection finds it linked nowhere.
func (s *Store) UnlinkBlob(ctx context.Context, repo, dgst string) error {
	return s.inTx(ctx, func(tx *txn) error {
		id, err := checkRepositoryDelete(ctx, tx, repo)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM repository_blobs WHERE repository_id = ? AND digest = ?`, id, dgst)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("blob %s in %s: %w", dgst, repo, ErrNotFound)
		}
		return nil
	})
}

// RepositoriesWithBlob lists up to limit repositories that link dgst.
func (s *Store) RepositoriesWithBlob(ctx context.Context, dgst string, limit int) ([]string, error) {
	return listColumn(ctx, s.read, `SELECT r.name FROM repository_blobs l JOIN repositories r ON r.id = l.repository_id
		WHERE l.digest = ? ORDER BY r.name LIMIT ?`, dgst, sqlLimit(limit))
}

// UnlinkUnreferencedBlob removes a blob's link in repo unless a manifest of
// repo references it.
func (s *Store) UnlinkUnreferencedBlob(ctx context.Context, repo, dgst string) error {
	return s.inTx(ctx, func(tx *txn) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM repository_blobs
			WHERE repository_id = (SELECT id FROM repositories WHERE name = ?) AND digest = ?
			AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository_id = repository_blobs.repository_id
				AND r.child_digest = repository_blobs.digest AND r.kind = 0)`, repo, dgst)
		return err
	})
}
