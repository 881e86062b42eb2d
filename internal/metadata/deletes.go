package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Deletion says how a delete treats what it removes.
type Deletion struct {
	// Soft keeps the deleted manifests and tags, as deleted, until they are
	// purged (their blobs stay referenced meanwhile).
	Soft bool
	// OwnedReferrers are the artifact types of referrers that belong to
	// their subject (made from it, such as its streaming artifacts): they
	// are deleted with it, and for good even when the delete is soft,
	// since only the subject can be restored.
	OwnedReferrers []string
}

// DeleteManifest deletes a live manifest, the tags pointing at it and its
// owned referrers, if the changeable attributes allow it. It returns the
// digests deleted, the manifest's first.
func (s *Store) DeleteManifest(ctx context.Context, repo, dgst string, d Deletion) ([]string, error) {
	var deleted []string
	err := s.inTx(ctx, func(tx *txn) error {
		id, err := checkRepositoryDelete(ctx, tx, repo)
		if err != nil {
			return err
		}
		var attrs Attributes
		err = tx.QueryRowContext(ctx, `SELECT `+attributeColumns+` FROM manifests WHERE repository_id = ? AND digest = ? AND deleted_at IS NULL`, id, dgst).Scan(attrs.scanDest()...)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("manifest %s in %s: %w", dgst, repo, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if err := checkLocked("manifest "+dgst, attrs); err != nil {
			return err
		}
		if err := checkTagsOf(ctx, tx, id, dgst); err != nil {
			return err
		}
		deleted, err = s.deleteManifestTx(ctx, tx, id, dgst, d)
		return err
	})
	return deleted, err
}

// deleteManifestTx deletes (or soft-deletes) one manifest and its owned
// referrers without checking attributes.
func (s *Store) deleteManifestTx(ctx context.Context, tx *txn, repoID int64, dgst string, d Deletion) ([]string, error) {
	deleted := []string{dgst}
	if d.Soft {
		now := s.nowNano()
		if _, err := tx.ExecContext(ctx, `INSERT INTO deleted_tags(repository_id, name, digest, deleted_at)
			SELECT repository_id, name, digest, ? FROM tags WHERE repository_id = ? AND digest = ?
			ON CONFLICT(repository_id, name, digest) DO UPDATE SET deleted_at = excluded.deleted_at`, now, repoID, dgst); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM tags WHERE repository_id = ? AND digest = ?`, repoID, dgst); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE manifests SET deleted_at = ? WHERE repository_id = ? AND digest = ?`, now, repoID, dgst); err != nil {
			return nil, err
		}
	} else if _, err := tx.ExecContext(ctx, `DELETE FROM manifests WHERE repository_id = ? AND digest = ?`, repoID, dgst); err != nil {
		return nil, err
	}
	if len(d.OwnedReferrers) == 0 {
		return deleted, nil
	}
	args := []any{repoID, dgst}
	for _, t := range d.OwnedReferrers {
		args = append(args, t)
	}
	owned, err := listColumn(ctx, tx, `SELECT digest FROM manifests WHERE repository_id = ? AND subject = ? AND artifact_type IN (?`+
		strings.Repeat(", ?", len(d.OwnedReferrers)-1)+`) ORDER BY digest`, args...)
	if err != nil {
		return nil, err
	}
	for _, o := range owned {
		if _, err := tx.ExecContext(ctx, `DELETE FROM manifests WHERE repository_id = ? AND digest = ?`, repoID, o); err != nil {
			return nil, err
		}
	}
	return append(deleted, owned...), nil
}

// checkRepositoryDelete returns the id of a repository whose attributes
// allow deleting from it.
func checkRepositoryDelete(ctx context.Context, tx *txn, repo string) (int64, error) {
	var id int64
	var attrs Attributes
	err := tx.QueryRowContext(ctx, `SELECT id, `+attributeColumns+` FROM repositories WHERE name = ?`, repo).Scan(append([]any{&id}, attrs.scanDest()...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("repository %s: %w", repo, ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	return id, checkLocked("repository "+repo, attrs)
}

// checkLocked refuses a delete of something delete- or write-disabled.
func checkLocked(what string, a Attributes) error {
	if err := denyUnless(what, a.DeleteEnabled, "deleteEnabled"); err != nil {
		return err
	}
	return denyUnless(what, a.WriteEnabled, "writeEnabled")
}

// checkTagsOf refuses deleting a manifest that a locked tag points at.
func checkTagsOf(ctx context.Context, tx *txn, repoID int64, dgst string) error {
	var name string
	err := tx.QueryRowContext(ctx, `SELECT name FROM tags WHERE repository_id = ? AND digest = ? AND (delete_enabled = 0 OR write_enabled = 0) LIMIT 1`, repoID, dgst).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: tag %s, which points at %s, is locked (deleteEnabled or writeEnabled false)", ErrDenied, name, dgst)
}

// DeleteTag deletes a tag, leaving the manifest it pointed at. With soft
// set the tag is listed as deleted until purged.
func (s *Store) DeleteTag(ctx context.Context, repo, tag string, soft bool) error {
	return s.inTx(ctx, func(tx *txn) error {
		id, err := checkRepositoryDelete(ctx, tx, repo)
		if err != nil {
			return err
		}
		var dgst string
		var attrs Attributes
		err = tx.QueryRowContext(ctx, `SELECT digest, `+attributeColumns+` FROM tags WHERE repository_id = ? AND name = ?`, id, tag).Scan(append([]any{&dgst}, attrs.scanDest()...)...)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("tag %s in %s: %w", tag, repo, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if err := checkLocked("tag "+tag, attrs); err != nil {
			return err
		}
		if soft {
			if _, err := tx.ExecContext(ctx, `INSERT INTO deleted_tags(repository_id, name, digest, deleted_at) VALUES (?, ?, ?, ?)
				ON CONFLICT(repository_id, name, digest) DO UPDATE SET deleted_at = excluded.deleted_at`, id, tag, dgst, s.nowNano()); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM tags WHERE repository_id = ? AND name = ?`, id, tag)
		return err
	})
}

// DeleteRepository deletes a repository with everything in it, if no
// attribute of it, its manifests or its tags forbids it. A soft delete
// keeps its manifests and tags as deleted until purged, less the owned
// referrers. It returns the digests of the manifests deleted.
func (s *Store) DeleteRepository(ctx context.Context, repo string, d Deletion) ([]string, error) {
	var deleted []string
	err := s.inTx(ctx, func(tx *txn) error {
		deleted = nil
		id, err := checkRepositoryDelete(ctx, tx, repo)
		if err != nil {
			return err
		}
		var locked string
		err = tx.QueryRowContext(ctx, `SELECT digest FROM manifests WHERE repository_id = ? AND deleted_at IS NULL AND (delete_enabled = 0 OR write_enabled = 0)
			UNION ALL SELECT name FROM tags WHERE repository_id = ? AND (delete_enabled = 0 OR write_enabled = 0) LIMIT 1`, id, id).Scan(&locked)
		if err == nil {
			return fmt.Errorf("%w: %s in repository %s is locked (deleteEnabled or writeEnabled false)", ErrDenied, locked, repo)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		live, err := listColumn(ctx, tx, `SELECT digest FROM manifests WHERE repository_id = ? AND deleted_at IS NULL ORDER BY digest`, id)
		if err != nil {
			return err
		}
		if !d.Soft {
			deleted = live
			_, err := tx.ExecContext(ctx, `DELETE FROM repositories WHERE id = ?`, id)
			return err
		}
		for _, m := range live {
			gone, err := s.deleteManifestTx(ctx, tx, id, m, d)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			deleted = append(deleted, gone...)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO deleted_repositories(name, created_at, deleted_at)
			SELECT name, created_at, ? FROM repositories WHERE id = ?`, s.nowNano(), id)
		return err
	})
	return deleted, err
}

// Deleted describes a soft-deleted repository, manifest or tag.
type Deleted struct {
	Name      string // repository or tag name
	Digest    string
	CreatedAt time.Time
	DeletedAt time.Time
}

// DeletedRepositories lists soft-deleted repositories, newest first.
func (s *Store) DeletedRepositories(ctx context.Context) ([]Deleted, error) {
	return s.listDeleted(ctx, `SELECT name, '', created_at, deleted_at FROM deleted_repositories ORDER BY deleted_at DESC, name`)
}

// DeletedManifests lists the soft-deleted manifests of a repository.
func (s *Store) DeletedManifests(ctx context.Context, repo string) ([]Deleted, error) {
	return s.listDeleted(ctx, `SELECT r.name, m.digest, m.created_at, m.deleted_at FROM manifests m JOIN repositories r ON r.id = m.repository_id
		WHERE r.name = ? AND m.deleted_at IS NOT NULL ORDER BY m.deleted_at DESC, m.digest`, repo)
}

// DeletedTags lists the soft-deleted tags of a repository.
func (s *Store) DeletedTags(ctx context.Context, repo string) ([]Deleted, error) {
	return s.listDeleted(ctx, `SELECT d.name, d.digest, d.deleted_at, d.deleted_at FROM deleted_tags d JOIN repositories r ON r.id = d.repository_id
		WHERE r.name = ? ORDER BY d.deleted_at DESC, d.name`, repo)
}

func (s *Store) listDeleted(ctx context.Context, query string, args ...any) ([]Deleted, error) {
	rows, err := s.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Deleted{}
	for rows.Next() {
		var d Deleted
		var created, deleted int64
		if err := rows.Scan(&d.Name, &d.Digest, &created, &deleted); err != nil {
			return nil, err
		}
		d.CreatedAt, d.DeletedAt = time.Unix(0, created), time.Unix(0, deleted)
		out = append(out, d)
	}
	return out, rows.Err()
}

// ErrRestoreRefused is returned when a soft-deleted manifest cannot be
// restored as asked; the message says why.
var ErrRestoreRefused = errors.New("restore refused")

// RestoreManifest restores a soft-deleted manifest, pointing tag (if not
// empty) at it. A tag that exists elsewhere is moved only with force. A
// manifest whose subject is still deleted is refused. If enqueue is set and
// the repository streams, the operation is recorded in the same
// transaction.
func (s *Store) RestoreManifest(ctx context.Context, repo, dgst, tag string, force bool, enqueue *Operation) error {
	return s.inTx(ctx, func(tx *txn) error {
		id, err := repositoryID(ctx, tx, repo)
		if err != nil {
			return err
		}
		var subject string
		err = tx.QueryRowContext(ctx, `SELECT COALESCE(subject, '') FROM manifests WHERE repository_id = ? AND digest = ? AND deleted_at IS NOT NULL`, id, dgst).Scan(&subject)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("deleted manifest %s in %s: %w", dgst, repo, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if subject != "" {
			var subjectDeleted bool
			err := tx.QueryRowContext(ctx, `SELECT deleted_at IS NOT NULL FROM manifests WHERE repository_id = ? AND digest = ?`, id, subject).Scan(&subjectDeleted)
			if err == nil && subjectDeleted {
				return fmt.Errorf("%w: its subject %s is deleted; restore the subject first", ErrRestoreRefused, subject)
			}
		}
		if tag != "" {
			var current string
			err := tx.QueryRowContext(ctx, `SELECT digest FROM tags WHERE repository_id = ? AND name = ?`, id, tag).Scan(&current)
			if err == nil && current != dgst && !force {
				return fmt.Errorf("%w: tag %s points at %s; restore with force to move it", ErrRestoreRefused, tag, current)
			}
		}
		now := s.nowNano()
		if _, err := tx.ExecContext(ctx, `UPDATE manifests SET deleted_at = NULL, updated_at = ? WHERE repository_id = ? AND digest = ?`, now, id, dgst); err != nil {
			return err
		}
		if tag != "" {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tags(repository_id, name, digest, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT(repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at`, id, tag, dgst, now, now); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM deleted_tags WHERE repository_id = ? AND name = ? AND digest = ?`, id, tag, dgst); err != nil {
				return err
			}
		}
		var streaming bool
		if err := tx.QueryRowContext(ctx, `SELECT streaming FROM repositories WHERE id = ?`, id).Scan(&streaming); err != nil {
			return err
		}
		if enqueue != nil && streaming {
			return s.insertOperation(ctx, tx, enqueue)
		}
		return nil
	})
}

// PurgeDeleted removes for good what was soft-deleted before cutoff.
func (s *Store) PurgeDeleted(ctx context.Context, cutoff time.Time) (int64, error) {
	var n int64
	err := s.inTx(ctx, func(tx *txn) error {
		c := cutoff.UnixNano()
		res, err := tx.ExecContext(ctx, `DELETE FROM manifests WHERE deleted_at IS NOT NULL AND deleted_at < ?`, c)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		if _, err := tx.ExecContext(ctx, `DELETE FROM deleted_tags WHERE deleted_at < ?`, c); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM deleted_repositories WHERE deleted_at < ?`, c)
		return err
	})
	return n, err
}
