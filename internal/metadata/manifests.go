package metadata

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// BlobRef is a blob a manifest references, with the size its descriptor
// claims.
type BlobRef struct {
	Digest string
	Size   int64
}

// Manifest is a stored manifest and what the registry indexed of it.
type Manifest struct {
	Repository   string
	Digest       string
	MediaType    string
	ArtifactType string
	Size         int64
	Payload      []byte // nil when read without payload
	Subject      string
	Annotations  map[string]string
	CreatedAt    time.Time
	// Platform and config type of an image manifest ("" otherwise).
	OS              string
	Architecture    string
	ConfigMediaType string
	// Readable is false when the repository, the manifest or the tag it
	// was read by has readEnabled: false (read only).
	Readable bool

	// Written only: what the manifest references.
	Blobs    []BlobRef
	Children []string
}

// PutManifest stores a manifest and points tags at it, in one transaction
// that first checks that the changeable attributes allow it (ErrDenied), that
// it is not soft-deleted (ErrManifestDeleted), that every blob it references
// is linked in the repository with the size its descriptor claims
// (ErrMissingBlob, ErrSizeMismatch) and that every child manifest is present
// (ErrMissingManifest). Storing a manifest that is already present only moves
// the tags. If enqueue is set and the repository streams, the operation is
// recorded in the same transaction, unless one is already active.
func (s *Store) PutManifest(ctx context.Context, m *Manifest, tags []string, enqueue *Operation) error {
	return s.inTx(ctx, func(tx *txn) error {
		id, err := s.ensureRepository(ctx, tx, m.Repository)
		if err != nil {
			return err
		}
		streaming, err := checkManifestWrite(ctx, tx, id, m, tags)
		if err != nil {
			return err
		}
		if err := checkReferences(ctx, tx, id, m); err != nil {
			return err
		}
		var annotations any
		if len(m.Annotations) > 0 {
			b, err := json.Marshal(m.Annotations)
			if err != nil {
				return err
			}
			annotations = string(b)
		}
		var subject any
		if m.Subject != "" {
			subject = m.Subject
		}
		now := s.nowNano()
		res, err := tx.ExecContext(ctx, `INSERT INTO manifests(repository_id, digest, media_type, artifact_type, size, payload, subject, annotations,
				os, architecture, config_media_type, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(repository_id, digest) DO NOTHING`,
			id, m.Digest, m.MediaType, m.ArtifactType, len(m.Payload), m.Payload, subject, annotations,
			m.OS, m.Architecture, m.ConfigMediaType, now, now)
		if err != nil {
			return fmt.Errorf("insert manifest: %w", err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			if err := insertReferences(ctx, tx, id, m); err != nil {
				return err
			}
		}
		for _, tag := range tags {
			_, err := tx.ExecContext(ctx, `INSERT INTO tags(repository_id, name, digest, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT(repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at`,
				id, tag, m.Digest, now, now)
			if err != nil {
				return fmt.Errorf("set tag %s: %w", tag, err)
			}
		}
		if enqueue != nil && streaming {
			return s.insertOperation(ctx, tx, enqueue)
		}
		return nil
	})
}

// checkManifestWrite enforces the changeable attributes on a push and
// refuses a soft-deleted digest. It returns whether the repository streams.
func checkManifestWrite(ctx context.Context, tx *txn, repoID int64, m *Manifest, tags []string) (streaming bool, err error) {
	var writable bool
	if err := tx.QueryRowContext(ctx, `SELECT write_enabled, streaming FROM repositories WHERE id = ?`, repoID).Scan(&writable, &streaming); err != nil {
		return false, err
	}
	if err := denyUnless("repository "+m.Repository, writable, "writeEnabled"); err != nil {
		return false, err
	}
	var deletedAt sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT deleted_at FROM manifests WHERE repository_id = ? AND digest = ?`, repoID, m.Digest).Scan(&deletedAt)
	if err == nil && deletedAt.Valid {
		return false, fmt.Errorf("%w: %s; restore it instead of pushing it again", ErrManifestDeleted, m.Digest)
	}
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, err
	}
	for _, tag := range tags {
		var current string
		var tagWritable bool
		err := tx.QueryRowContext(ctx, `SELECT digest, write_enabled FROM tags WHERE repository_id = ? AND name = ?`, repoID, tag).Scan(&current, &tagWritable)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return false, err
		}
		if current != m.Digest {
			if err := denyUnless("tag "+tag, tagWritable, "writeEnabled"); err != nil {
				return false, err
			}
		}
	}
	return streaming, nil
}

func checkReferences(ctx context.Context, tx *txn, repoID int64, m *Manifest) error {
	for _, b := range m.Blobs {
		var size int64
		err := tx.QueryRowContext(ctx, `SELECT b.size FROM repository_blobs l JOIN blobs b ON b.digest = l.digest
			WHERE l.repository_id = ? AND l.digest = ? AND b.state = 0`, repoID, b.Digest).Scan(&size)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %s", ErrMissingBlob, b.Digest)
		}
		if err != nil {
			return err
		}
		if size != b.Size {
			return fmt.Errorf("%w: %s is %d bytes, the descriptor says %d", ErrSizeMismatch, b.Digest, size, b.Size)
		}
	}
	for _, c := range m.Children {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM manifests WHERE repository_id = ? AND digest = ?`, repoID, c).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %s", ErrMissingManifest, c)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func insertReferences(ctx context.Context, tx *txn, repoID int64, m *Manifest) error {
	const q = `INSERT INTO manifest_references(repository_id, manifest_digest, child_digest, kind) VALUES (?, ?, ?, ?)
		ON CONFLICT DO NOTHING`
	for _, b := range m.Blobs {
		if _, err := tx.ExecContext(ctx, q, repoID, m.Digest, b.Digest, 0); err != nil {
			return err
		}
	}
	for _, c := range m.Children {
		if _, err := tx.ExecContext(ctx, q, repoID, m.Digest, c, 1); err != nil {
			return err
		}
	}
	return nil
}

// GetManifest reads a live manifest by tag or by digest (exactly one of them
// set). Without withPayload it skips the payload, for HEAD requests.
//
// Payloads come from a cache by digest when they can: a digest names its
// bytes for ever, so the cache is never invalidated, while whether the
// manifest is live and readable is read every time.
func (s *Store) GetManifest(ctx context.Context, repo, tag, dgst string, withPayload bool) (*Manifest, error) {
	m, err := s.getManifest(ctx, repo, tag, dgst)
	if err != nil || !withPayload {
		return m, err
	}
	if p, ok := s.payloads.Get(m.Digest); ok {
		m.Payload = p
		return m, nil
	}
	// A manifest deleted since the read above is not found.
	_, m.Payload, err = s.ManifestPayload(ctx, repo, m.Digest)
	if err != nil {
		return nil, err
	}
	if len(m.Payload) <= maxCachedPayload {
		s.payloads.Add(m.Digest, m.Payload)
	}
	return m, nil
}

// maxCachedPayload is the largest manifest the payload cache keeps: with
// payloadCacheEntries entries it holds at most 256 MiB, and most
// manifests are a few KiB.
const (
	maxCachedPayload    = 64 << 10
	payloadCacheEntries = 4096
)

// getManifest reads a live manifest's record, without its payload.
func (s *Store) getManifest(ctx context.Context, repo, tag, dgst string) (*Manifest, error) {
	const cols = `m.digest, m.media_type, m.artifact_type, m.size, COALESCE(m.subject, ''), m.os, m.architecture, m.config_media_type, m.created_at, `
	var row *sql.Row
	if tag != "" {
		row = s.read.QueryRowContext(ctx, `SELECT `+cols+`(r.read_enabled = 1 AND m.read_enabled = 1 AND t.read_enabled = 1) FROM repositories r
			JOIN tags t ON t.repository_id = r.id
			JOIN manifests m ON m.repository_id = r.id AND m.digest = t.digest
			WHERE r.name = ? AND t.name = ? AND m.deleted_at IS NULL`, repo, tag)
	} else {
		row = s.read.QueryRowContext(ctx, `SELECT `+cols+`(r.read_enabled = 1 AND m.read_enabled = 1) FROM repositories r
			JOIN manifests m ON m.repository_id = r.id
			WHERE r.name = ? AND m.digest = ? AND m.deleted_at IS NULL`, repo, dgst)
	}
	m := &Manifest{Repository: repo}
	var created int64
	err := row.Scan(&m.Digest, &m.MediaType, &m.ArtifactType, &m.Size, &m.Subject, &m.OS, &m.Architecture, &m.ConfigMediaType, &created, &m.Readable)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("manifest %s%s in %s: %w", tag, dgst, repo, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	m.CreatedAt = time.Unix(0, created)
	return m, nil
}

// ListTags returns up to n tags of repo in lexical order after last, and
// whether more follow. n < 0 means no limit. ErrNotFound means the
// repository does not exist.
func (s *Store) ListTags(ctx context.Context, repo, last string, n int) ([]string, bool, error) {
	id, err := repositoryID(ctx, s.read, repo)
	if err != nil {
		return nil, false, err
	}
	return listNames(ctx, s.read, `SELECT name FROM tags WHERE repository_id = ? AND name > ? AND list_enabled = 1 ORDER BY name`, n, id, last)
}

// listNames runs a name query for one page of n names (all when n < 0),
// asking for one row more to learn whether another page follows.
func listNames(ctx context.Context, q queryer, query string, n int, args ...any) ([]string, bool, error) {
	limit := n + 1
	if n < 0 {
		limit = -1
	}
	names, err := listColumn(ctx, q, query+` LIMIT ?`, append(args, sqlLimit(limit))...)
	if err != nil {
		return nil, false, err
	}
	if n >= 0 && len(names) > n {
		return names[:n], true, nil
	}
	return names, false, nil
}

// listColumn runs a query of one string column.
func listColumn(ctx context.Context, q queryer, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Referrers lists the manifests of repo whose subject is dgst, optionally
// only those of one artifact type, in digest order.
func (s *Store) Referrers(ctx context.Context, repo, dgst, artifactType string) ([]Manifest, error) {
	query := `SELECT m.digest, m.media_type, m.artifact_type, m.size, m.annotations FROM repositories r
		JOIN manifests m ON m.repository_id = r.id
		WHERE r.name = ? AND m.subject = ? AND m.deleted_at IS NULL`
	args := []any{repo, dgst}
	if artifactType != "" {
		query += ` AND m.artifact_type = ?`
		args = append(args, artifactType)
	}
	rows, err := s.read.QueryContext(ctx, query+` ORDER BY m.digest`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Manifest
	for rows.Next() {
		m := Manifest{Repository: repo, Subject: dgst}
		var annotations sql.NullString
		if err := rows.Scan(&m.Digest, &m.MediaType, &m.ArtifactType, &m.Size, &annotations); err != nil {
			return nil, err
		}
		if annotations.Valid {
			if err := json.Unmarshal([]byte(annotations.String), &m.Annotations); err != nil {
				return nil, fmt.Errorf("annotations of %s: %w", m.Digest, err)
			}
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// ManifestPayload reads a manifest's media type and bytes whether it is
// live or soft-deleted.
func (s *Store) ManifestPayload(ctx context.Context, repo, dgst string) (string, []byte, error) {
	var mediaType string
	var payload []byte
	err := s.read.QueryRowContext(ctx, `SELECT m.media_type, m.payload FROM manifests m JOIN repositories r ON r.id = m.repository_id
		WHERE r.name = ? AND m.digest = ?`, repo, dgst).Scan(&mediaType, &payload)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, fmt.Errorf("manifest %s in %s: %w", dgst, repo, ErrNotFound)
	}
	return mediaType, payload, err
}
