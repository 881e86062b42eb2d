package metadata

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// TagInfo is a tag as the management API shows it.
type TagInfo struct {
	Name       string
	Digest     string
	CreatedAt  time.Time
	UpdatedAt  time.Time
	Attributes Attributes
}

// ManifestInfo is a manifest as the management API shows it.
type ManifestInfo struct {
	Digest          string
	MediaType       string
	ArtifactType    string
	ConfigMediaType string
	Subject         string
	OS              string
	Architecture    string
	// ImageSize is the manifest's size plus that of the blobs it references.
	ImageSize  int64
	CreatedAt  time.Time
	UpdatedAt  time.Time
	Tags       []string
	Attributes Attributes
}

// Tags lists the listable tags of a repository in name order after last
// (n < 0: all), and whether more follow; with name set, only that tag.
func (s *Store) Tags(ctx context.Context, repo, name, last string, n int) ([]TagInfo, bool, error) {
	id, err := repositoryID(ctx, s.read, repo)
	if err != nil {
		return nil, false, err
	}
	query := `SELECT name, digest, created_at, updated_at, ` + attributeColumns + ` FROM tags WHERE repository_id = ?`
	args := []any{id}
	if name != "" {
		query += ` AND name = ?`
		args = append(args, name)
	} else {
		query += ` AND list_enabled = 1 AND name > ?`
		args = append(args, last)
	}
	limit := n + 1
	if n < 0 {
		limit = -1
	}
	rows, err := s.read.QueryContext(ctx, query+` ORDER BY name LIMIT ?`, append(args, sqlLimit(limit))...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	out := []TagInfo{}
	for rows.Next() {
		var t TagInfo
		var created, updated int64
		if err := rows.Scan(append([]any{&t.Name, &t.Digest, &created, &updated}, t.Attributes.scanDest()...)...); err != nil {
			return nil, false, err
		}
		t.CreatedAt, t.UpdatedAt = time.Unix(0, created), time.Unix(0, updated)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	if name != "" && len(out) == 0 {
		return nil, false, fmt.Errorf("tag %s in %s: %w", name, repo, ErrNotFound)
	}
	if n >= 0 && len(out) > n {
		return out[:n], true, nil
	}
	return out, false, nil
}

// Manifests lists the live, listable manifests of a repository in digest
// order after last (n < 0: all), and whether more follow; with dgst set,
// only that manifest.
func (s *Store) Manifests(ctx context.Context, repo, dgst, last string, n int) ([]ManifestInfo, bool, error) {
	id, err := repositoryID(ctx, s.read, repo)
	if err != nil {
		return nil, false, err
	}
	query := `SELECT m.digest, m.media_type, m.artifact_type, m.config_media_type, COALESCE(m.subject, ''), m.os, m.architecture,
			m.size + COALESCE((SELECT SUM(b.size) FROM manifest_references r JOIN blobs b ON b.digest = r.child_digest
				WHERE r.repository_id = m.repository_id AND r.manifest_digest = m.digest AND r.kind = 0), 0),
			m.created_at, m.updated_at, ` + attributeColumnsOf("m") + `,
			COALESCE((SELECT string_agg(t.name, ',') FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest), '')
		FROM manifests m WHERE m.repository_id = ? AND m.deleted_at IS NULL`
	args := []any{id}
	if dgst != "" {
		query += ` AND m.digest = ?`
		args = append(args, dgst)
	} else {
		query += ` AND m.list_enabled = 1 AND m.digest > ?`
		args = append(args, last)
	}
	limit := n + 1
	if n < 0 {
		limit = -1
	}
	rows, err := s.read.QueryContext(ctx, query+` ORDER BY m.digest LIMIT ?`, append(args, sqlLimit(limit))...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	out := []ManifestInfo{}
	for rows.Next() {
		var m ManifestInfo
		var created, updated int64
		var tags string
		dest := []any{&m.Digest, &m.MediaType, &m.ArtifactType, &m.ConfigMediaType, &m.Subject, &m.OS, &m.Architecture, &m.ImageSize, &created, &updated}
		dest = append(append(dest, m.Attributes.scanDest()...), &tags)
		if err := rows.Scan(dest...); err != nil {
			return nil, false, err
		}
		m.CreatedAt, m.UpdatedAt = time.Unix(0, created), time.Unix(0, updated)
		m.Tags = []string{}
		if tags != "" {
			m.Tags = strings.Split(tags, ",")
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	if dgst != "" && len(out) == 0 {
		return nil, false, fmt.Errorf("manifest %s in %s: %w", dgst, repo, ErrNotFound)
	}
	if n >= 0 && len(out) > n {
		return out[:n], true, nil
	}
	return out, false, nil
}

// UpdateTagAttributes changes a tag's attributes.
func (s *Store) UpdateTagAttributes(ctx context.Context, repo, tag string, p AttributesPatch) error {
	return s.updateAttributes(ctx, "tags", "name", repo, tag, p)
}

// UpdateManifestAttributes changes a live manifest's attributes.
func (s *Store) UpdateManifestAttributes(ctx context.Context, repo, dgst string, p AttributesPatch) error {
	return s.updateAttributes(ctx, "manifests", "digest", repo, dgst, p)
}

func (s *Store) updateAttributes(ctx context.Context, table, keyCol, repo, key string, p AttributesPatch) error {
	return s.inTx(ctx, func(tx *txn) error {
		id, err := repositoryID(ctx, tx, repo)
		if err != nil {
			return err
		}
		sets, args := p.assignments()
		sets = append(sets, "updated_at = ?")
		args = append(args, s.nowNano(), id, key)
		where := ` WHERE repository_id = ? AND ` + keyCol + ` = ?`
		if table == "manifests" {
			where += ` AND deleted_at IS NULL`
		}
		res, err := tx.ExecContext(ctx, `UPDATE `+table+` SET `+strings.Join(sets, ", ")+where, args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%s in %s: %w", key, repo, ErrNotFound)
		}
		return nil
	})
}
