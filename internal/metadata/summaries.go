package metadata

import (
	"context"
	"strings"
	"time"
)

// Summaries for the portal's lists: one query per page, however many rows
// it shows.

// SearchRepositories is ListRepositories restricted to names that contain
// contains (case-insensitively; "" matches every name).
func (s *Store) SearchRepositories(ctx context.Context, contains, last string, n int) ([]string, bool, error) {
	pattern := "%" + likeEscaper.Replace(strings.ToLower(contains)) + "%"
	return listNames(ctx, s.read, `SELECT name FROM repositories r WHERE name > ? AND list_enabled = 1 AND LOWER(name) LIKE ? ESCAPE '\'
		AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id AND m.deleted_at IS NULL)
		ORDER BY name`, n, last, pattern)
}

// likeEscaper quotes LIKE's wildcards and its escape character.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// RepositorySummaries reads the named repositories with their settings,
// counts, size and last push, in the order of names; names that are no
// repository are left out.
func (s *Store) RepositorySummaries(ctx context.Context, names []string) ([]Repository, error) {
	if len(names) == 0 {
		return nil, nil
	}
	rows, err := s.read.QueryContext(ctx, `SELECT r.name, r.created_at, r.updated_at, r.streaming, `+attributeColumnsOf("r")+`,
			(SELECT COUNT(*) FROM manifests m WHERE m.repository_id = r.id AND m.deleted_at IS NULL),
			(SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id),
			(SELECT COALESCE(SUM(b.size), 0) FROM repository_blobs l JOIN blobs b ON b.digest = l.digest WHERE l.repository_id = r.id AND b.size > 0)
			+ (SELECT COALESCE(SUM(m.size), 0) FROM manifests m WHERE m.repository_id = r.id),
			(SELECT COALESCE(MAX(m.created_at), 0) FROM manifests m WHERE m.repository_id = r.id AND m.deleted_at IS NULL)
		FROM repositories r WHERE r.name IN (`+placeholders(len(names))+`)`, stringArgs(names)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	byName := map[string]Repository{}
	for rows.Next() {
		var r Repository
		var created, updated, pushed int64
		dest := append([]any{&r.Name, &created, &updated, &r.Streaming}, r.Attributes.scanDest()...)
		dest = append(dest, &r.ManifestCount, &r.TagCount, &r.Size, &pushed)
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		r.CreatedAt, r.UpdatedAt = time.Unix(0, created), time.Unix(0, updated)
		if pushed > 0 {
			r.LastPush = time.Unix(0, pushed)
		}
		byName[r.Name] = r
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]Repository, 0, len(names))
	for _, name := range names {
		if r, ok := byName[name]; ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// RepositorySize is a repository's name and size.
type RepositorySize struct {
	Name string
	Size int64
}

// LargestRepositories returns the n repositories that hold the most bytes,
// largest first, counting what each links as GetRepository does.
func (s *Store) LargestRepositories(ctx context.Context, n int) ([]RepositorySize, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT r.name, sizes.size FROM repositories r JOIN (
			SELECT id, SUM(size) AS size FROM (
				SELECT l.repository_id AS id, b.size AS size FROM repository_blobs l JOIN blobs b ON b.digest = l.digest WHERE b.size > 0
				UNION ALL
				SELECT m.repository_id, m.size FROM manifests m
			) parts GROUP BY id
		) sizes ON sizes.id = r.id
		ORDER BY sizes.size DESC, r.name LIMIT ?`, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RepositorySize
	for rows.Next() {
		var r RepositorySize
		if err := rows.Scan(&r.Name, &r.Size); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ArtifactState is what a repository holds of an image's conversion: how
// many live artifacts of a type have it as their subject, and the status
// of its latest operation of a kind ("" when it never had one).
type ArtifactState struct {
	Artifacts int
	Operation string
}

// ArtifactStates reads the ArtifactState of each of digests in repo.
func (s *Store) ArtifactStates(ctx context.Context, repo, artifactType, kind string, digests []string) (map[string]ArtifactState, error) {
	out := map[string]ArtifactState{}
	if len(digests) == 0 {
		return out, nil
	}
	args := append([]any{artifactType, repo}, stringArgs(digests)...)
	rows, err := s.read.QueryContext(ctx, `SELECT m.subject, COUNT(*) FROM manifests m JOIN repositories r ON r.id = m.repository_id
		WHERE m.artifact_type = ? AND r.name = ? AND m.deleted_at IS NULL AND m.subject IN (`+placeholders(len(digests))+`)
		GROUP BY m.subject`, args...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var d string
		var n int
		if err := rows.Scan(&d, &n); err != nil {
			rows.Close()
			return nil, err
		}
		out[d] = ArtifactState{Artifacts: n}
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	args = append([]any{kind, repo}, stringArgs(digests)...)
	rows, err = s.read.QueryContext(ctx, `SELECT digest, status FROM operations o
		WHERE kind = ? AND repository = ? AND digest IN (`+placeholders(len(digests))+`)
		ORDER BY created_at, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var d, status string
		if err := rows.Scan(&d, &status); err != nil {
			return nil, err
		}
		st := out[d]
		st.Operation = status // the newest comes last
		out[d] = st
	}
	return out, rows.Err()
}

// placeholders is n comma-separated parameters.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

func stringArgs(vs []string) []any {
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = v
	}
	return out
}

// DeletedManifestsAll lists the soft-deleted manifests of every
// repository, newest first, at most n; Name is the repository's.
func (s *Store) DeletedManifestsAll(ctx context.Context, n int) ([]Deleted, error) {
	return s.listDeleted(ctx, `SELECT r.name, m.digest, m.created_at, m.deleted_at FROM manifests m JOIN repositories r ON r.id = m.repository_id
		WHERE m.deleted_at IS NOT NULL ORDER BY m.deleted_at DESC, r.name, m.digest LIMIT ?`, sqlLimit(n))
}
