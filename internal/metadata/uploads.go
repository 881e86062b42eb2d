package metadata

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// UploadPart is one chunk of an upload, stored as its own object.
type UploadPart struct {
	Key  string `json:"key"`
	Size int64  `json:"size"`
}

// Upload is the persisted state of a blob upload session.
type Upload struct {
	ID         string
	Repository string
	Algorithm  string
	HashState  []byte
	Size       int64
	Parts      []UploadPart
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// CreateUpload records a new upload session.
func (s *Store) CreateUpload(ctx context.Context, u *Upload) error {
	now := s.nowNano()
	u.CreatedAt, u.UpdatedAt = time.Unix(0, now), time.Unix(0, now)
	return s.inTx(ctx, func(tx *txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO uploads(id, repository, algorithm, hash_state, size, parts, created_at, updated_at)
			VALUES (?, ?, ?, ?, 0, '[]', ?, ?)`, u.ID, u.Repository, u.Algorithm, u.HashState, now, now)
		return err
	})
}

// GetUpload reads an upload session of repo, or ErrNotFound.
func (s *Store) GetUpload(ctx context.Context, repo, id string) (*Upload, error) {
	return getUpload(ctx, s.read, repo, id)
}

const uploadColumns = `id, repository, algorithm, hash_state, size, parts, created_at, updated_at`

func getUpload(ctx context.Context, q queryer, repo, id string) (*Upload, error) {
	u, err := scanUpload(q.QueryRowContext(ctx, `SELECT `+uploadColumns+` FROM uploads WHERE id = ? AND repository = ?`, id, repo))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("upload %s: %w", id, ErrNotFound)
	}
	return u, err
}

func scanUpload(row interface{ Scan(...any) error }) (*Upload, error) {
	u := &Upload{}
	var parts string
	var created, updated int64
	if err := row.Scan(&u.ID, &u.Repository, &u.Algorithm, &u.HashState, &u.Size, &parts, &created, &updated); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(parts), &u.Parts); err != nil {
		return nil, fmt.Errorf("upload %s: parts: %w", u.ID, err)
	}
	u.CreatedAt, u.UpdatedAt = time.Unix(0, created), time.Unix(0, updated)
	return u, nil
}

// AppendUploadPart records a chunk written at offset from, with the hash
// state after it. ErrUploadConflict means another chunk was recorded first.
func (s *Store) AppendUploadPart(ctx context.Context, repo, id string, from int64, part UploadPart, hashState []byte) error {
	return s.inTx(ctx, func(tx *txn) error {
		u, err := getUpload(ctx, tx, repo, id)
		if err != nil {
			return err
		}
		if u.Size != from {
			return fmt.Errorf("upload %s is at offset %d, not %d: %w", id, u.Size, from, ErrUploadConflict)
		}
		parts, err := json.Marshal(append(u.Parts, part))
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE uploads SET size = ?, parts = ?, hash_state = ?, updated_at = ? WHERE id = ?`,
			from+part.Size, string(parts), hashState, s.nowNano(), id)
		return err
	})
}

// DeleteUpload removes an upload session's record.
func (s *Store) DeleteUpload(ctx context.Context, id string) error {
	return s.inTx(ctx, func(tx *txn) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM uploads WHERE id = ?`, id)
		return err
	})
}

// StaleUploads lists up to limit uploads not written to since cutoff.
func (s *Store) StaleUploads(ctx context.Context, cutoff time.Time, limit int) ([]*Upload, error) {
	return s.queryUploads(ctx, `WHERE updated_at < ? LIMIT ?`, cutoff.UnixNano(), sqlLimit(limit))
}

// queryUploads lists the uploads a WHERE clause selects.
func (s *Store) queryUploads(ctx context.Context, where string, args ...any) ([]*Upload, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+uploadColumns+` FROM uploads `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Upload
	for rows.Next() {
		u, err := scanUpload(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// UploadExists reports whether an upload session is recorded.
func (s *Store) UploadExists(ctx context.Context, id string) (bool, error) {
	var one int
	err := s.read.QueryRowContext(ctx, `SELECT 1 FROM uploads WHERE id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// TouchUpload marks an upload as being written now.
func (s *Store) TouchUpload(ctx context.Context, id string) error {
	return s.inTx(ctx, func(tx *txn) error {
		_, err := tx.ExecContext(ctx, `UPDATE uploads SET updated_at = ? WHERE id = ?`, s.nowNano(), id)
		return err
	})
}

// UploadsWithPrefix lists the uploads of repo whose id starts with prefix.
func (s *Store) UploadsWithPrefix(ctx context.Context, repo, prefix string) ([]*Upload, error) {
	return s.queryUploads(ctx, `WHERE repository = ? AND substr(id, 1, ?) = ?`, repo, len(prefix), prefix)
}
