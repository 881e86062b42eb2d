package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Repository is a repository with its settings and counts.
type Repository struct {
	Name          string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	Attributes    Attributes
	Streaming     bool
	ManifestCount int
	TagCount      int
	// Size is the bytes of the blobs linked in the repository and of its
	// manifests.
	Size int64
	// LastPush is when its newest live manifest was pushed (set by
	// RepositorySummaries).
	LastPush time.Time
}

// GetRepository reads a repository and its counts, or ErrNotFound.
func (s *Store) GetRepository(ctx context.Context, name string) (*Repository, error) {
	r := &Repository{Name: name}
	var created, updated int64
	dest := append([]any{&created, &updated, &r.Streaming}, r.Attributes.scanDest()...)
	err := s.read.QueryRowContext(ctx, `SELECT created_at, updated_at, streaming, `+attributeColumns+` FROM repositories WHERE name = ?`, name).Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("repository %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	r.CreatedAt, r.UpdatedAt = time.Unix(0, created), time.Unix(0, updated)
	err = s.read.QueryRowContext(ctx, `SELECT
			(SELECT COUNT(*) FROM manifests m WHERE m.repository_id = r.id AND m.deleted_at IS NULL),
			(SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id),
			(SELECT COALESCE(SUM(b.size), 0) FROM repository_blobs l JOIN blobs b ON b.digest = l.digest WHERE l.repository_id = r.id AND b.size > 0)
			+ (SELECT COALESCE(SUM(m.size), 0) FROM manifests m WHERE m.repository_id = r.id)
		FROM repositories r WHERE r.name = ?`, name).Scan(&r.ManifestCount, &r.TagCount, &r.Size)
	return r, err
}

// RepositoryPatch changes the settings that are not nil.
type RepositoryPatch struct {
	Attributes AttributesPatch
	Streaming  *bool
}

// UpdateRepository applies a patch. With create set, a missing repository
// is created first (a pipeline may configure streaming before its first
// push); otherwise it is ErrNotFound.
func (s *Store) UpdateRepository(ctx context.Context, name string, p RepositoryPatch, create bool) error {
	return s.inTx(ctx, func(tx *txn) error {
		if create {
			if _, err := s.ensureRepository(ctx, tx, name); err != nil {
				return err
			}
		}
		sets, args := p.Attributes.assignments()
		if p.Streaming != nil {
			sets = append(sets, "streaming = ?")
			args = append(args, boolInt(*p.Streaming))
		}
		sets = append(sets, "updated_at = ?")
		args = append(args, s.nowNano(), name)
		res, err := tx.ExecContext(ctx, `UPDATE repositories SET `+strings.Join(sets, ", ")+` WHERE name = ?`, args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("repository %s: %w", name, ErrNotFound)
		}
		return nil
	})
}

// ListRepositories returns up to n names (n < 0: all) of repositories that
// hold at least one live manifest and are listable, in lexical order after
// last, and whether more follow.
func (s *Store) ListRepositories(ctx context.Context, last string, n int) ([]string, bool, error) {
	return listNames(ctx, s.read, `SELECT name FROM repositories r WHERE name > ? AND list_enabled = 1
		AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id AND m.deleted_at IS NULL)
		ORDER BY name`, n, last)
}

// TotalSize is the bytes stored, counting each blob once however many
// repositories link it, plus the manifests.
func (s *Store) TotalSize(ctx context.Context) (int64, error) {
	var size int64
	err := s.read.QueryRowContext(ctx, `SELECT
		(SELECT COALESCE(SUM(size), 0) FROM blobs WHERE state = 0 AND size > 0)
		+ (SELECT COALESCE(SUM(size), 0) FROM manifests)`).Scan(&size)
	return size, err
}

// CheckWritable returns ErrDenied if the repository exists and has
// writeEnabled: false; a repository that does not exist yet is writable.
func (s *Store) CheckWritable(ctx context.Context, name string) error {
	var writable bool
	err := s.read.QueryRowContext(ctx, `SELECT write_enabled FROM repositories WHERE name = ?`, name).Scan(&writable)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	return denyUnless("repository "+name, writable, "writeEnabled")
}
