package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Operation statuses.
const (
	StatusNotStarted = "NotStarted"
	StatusRunning    = "Running"
	StatusSucceeded  = "Succeeded"
	StatusFailed     = "Failed"
	StatusCanceled   = "Canceled"
)

// DetailsImageDeleted is the details of a conversion canceled because its
// image was deleted.
const DetailsImageDeleted = "Canceled: the image was deleted"

// ErrOperationActive is returned when creating an operation for an image
// that already has one queued or running; the active one is returned.
var ErrOperationActive = errors.New("an operation is already active for this image")

// AutoStreaming is the StartedBy of a conversion enqueued by a repository's
// auto-streaming setting, when an image is pushed to it or restored in it.
const AutoStreaming = "auto-streaming"

// Operation is a durable unit of background work (a conversion, an import).
type Operation struct {
	ID         string
	Kind       string
	Repository string
	Digest     string
	Status     string
	// Request is the kind-specific input, JSON.
	Request       string
	ProgressBytes int64
	TotalBytes    int64
	Details       string
	ErrorCode     string
	ErrorMessage  string
	// Result is the kind-specific output, JSON.
	Result string
	// StartedBy names who started the operation: the admin user or token
	// that asked for it, or AutoStreaming.
	StartedBy  string
	Attempts   int
	CreatedAt  time.Time
	StartedAt  time.Time
	UpdatedAt  time.Time
	FinishedAt time.Time
}

// Active reports whether the operation is queued or running.
func (o *Operation) Active() bool {
	return o.Status == StatusNotStarted || o.Status == StatusRunning
}

const operationColumns = `id, kind, repository, digest, status, request, progress_bytes, total_bytes, details, error_code, error_message, result,
	started_by, attempts, created_at, started_at, updated_at, finished_at`

func scanOperation(row interface{ Scan(...any) error }) (*Operation, error) {
	o := &Operation{}
	var created, started, updated, finished int64
	err := row.Scan(&o.ID, &o.Kind, &o.Repository, &o.Digest, &o.Status, &o.Request, &o.ProgressBytes, &o.TotalBytes, &o.Details,
		&o.ErrorCode, &o.ErrorMessage, &o.Result, &o.StartedBy, &o.Attempts, &created, &started, &updated, &finished)
	if err != nil {
		return nil, err
	}
	o.CreatedAt, o.UpdatedAt = time.Unix(0, created), time.Unix(0, updated)
	if started > 0 {
		o.StartedAt = time.Unix(0, started)
	}
	if finished > 0 {
		o.FinishedAt = time.Unix(0, finished)
	}
	return o, nil
}

// CreateOperation records a new operation. If the image already has an
// active operation of the same kind it returns that one with
// ErrOperationActive.
func (s *Store) CreateOperation(ctx context.Context, o *Operation) (*Operation, error) {
	err := s.inTx(ctx, func(tx *txn) error { return s.insertOperation(ctx, tx, o) })
	if err != nil {
		return nil, err
	}
	got, err := s.GetOperation(ctx, o.ID)
	if errors.Is(err, ErrNotFound) {
		active, err := s.ActiveOperation(ctx, o.Kind, o.Repository, o.Digest)
		if err != nil {
			return nil, err
		}
		return active, ErrOperationActive
	}
	return got, err
}

// insertOperation records o unless an active operation of its kind exists
// for the same image, in which case it does nothing.
func (s *Store) insertOperation(ctx context.Context, tx *txn, o *Operation) error {
	now := s.nowNano()
	if o.Status == "" {
		o.Status = StatusNotStarted
	}
	var finished int64
	if !o.Active() {
		finished = now
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO operations(id, kind, repository, digest, status, request, details, result, started_by, total_bytes,
			created_at, updated_at, finished_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		o.ID, o.Kind, o.Repository, o.Digest, o.Status, o.Request, o.Details, o.Result, o.StartedBy, o.TotalBytes, now, now, finished)
	if err != nil {
		return fmt.Errorf("record operation: %w", err)
	}
	return nil
}

// GetOperation reads an operation by id.
func (s *Store) GetOperation(ctx context.Context, id string) (*Operation, error) {
	o, err := scanOperation(s.read.QueryRowContext(ctx, `SELECT `+operationColumns+` FROM operations WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("operation %s: %w", id, ErrNotFound)
	}
	return o, err
}

// ActiveOperation returns the queued or running operation of a kind for an
// image, or ErrNotFound.
func (s *Store) ActiveOperation(ctx context.Context, kind, repo, dgst string) (*Operation, error) {
	o, err := scanOperation(s.read.QueryRowContext(ctx, `SELECT `+operationColumns+` FROM operations
		WHERE kind = ? AND repository = ? AND digest = ? AND status IN ('NotStarted', 'Running')`, kind, repo, dgst))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("active operation for %s@%s: %w", repo, dgst, ErrNotFound)
	}
	return o, err
}

// ClaimOperation takes the lease of the oldest queued operation of the
// given kind, or of a running one whose lease ran out (its worker died),
// marking it running. It returns ErrNotFound when there is none.
func (s *Store) ClaimOperation(ctx context.Context, kind, owner string, lease time.Duration) (*Operation, error) {
	var o *Operation
	err := s.inQueueTx(ctx, func(tx *txn, skipLocked string) error {
		now := s.nowNano()
		var err error
		o, err = scanOperation(tx.QueryRowContext(ctx, `UPDATE operations SET status = 'Running', lease_owner = ?, lease_expires_at = ?,
				attempts = attempts + 1, started_at = CASE WHEN started_at = 0 THEN ? ELSE started_at END, updated_at = ?
			WHERE id = (SELECT id FROM operations WHERE kind = ? AND status IN ('NotStarted', 'Running')
				AND lease_expires_at < ? AND not_before <= ? ORDER BY created_at LIMIT 1 `+skipLocked+`)
			RETURNING `+operationColumns, owner, now+lease.Nanoseconds(), now, now, kind, now, now))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return o, err
}

// Heartbeat renews a lease and records progress. It returns the status as
// stored: a worker that sees anything but Running (a cancel, or its lease
// taken over) must stop.
func (s *Store) Heartbeat(ctx context.Context, id, owner string, lease time.Duration, progress, total int64, details string) (string, error) {
	var status string
	err := s.inTx(ctx, func(tx *txn) error {
		now := s.nowNano()
		_, err := tx.ExecContext(ctx, `UPDATE operations SET lease_expires_at = ?, progress_bytes = ?, total_bytes = ?, details = ?, updated_at = ?
			WHERE id = ? AND lease_owner = ? AND status = 'Running'`, now+lease.Nanoseconds(), progress, total, details, now, id, owner)
		if err != nil {
			return err
		}
		var leaseOwner string
		if err := tx.QueryRowContext(ctx, `SELECT status, lease_owner FROM operations WHERE id = ?`, id).Scan(&status, &leaseOwner); err != nil {
			return err
		}
		if leaseOwner != owner && status == StatusRunning {
			status = "LeaseLost"
		}
		return nil
	})
	return status, err
}

// FinishOperation ends a running operation held by owner with a final
// status (and o.TotalBytes, when set, as its total; a success is then
// complete). It reports false if the operation was no longer the owner's to
// finish (canceled meanwhile, or taken over).
func (s *Store) FinishOperation(ctx context.Context, id, owner string, o Operation) (bool, error) {
	var ok bool
	err := s.inTx(ctx, func(tx *txn) error {
		now := s.nowNano()
		res, err := tx.ExecContext(ctx, `UPDATE operations SET status = ?, details = ?, error_code = ?, error_message = ?, result = ?,
				total_bytes = CASE WHEN ? > 0 THEN ? ELSE total_bytes END,
				progress_bytes = CASE WHEN ? = 'Succeeded' THEN (CASE WHEN ? > 0 THEN ? ELSE total_bytes END) ELSE progress_bytes END,
				lease_owner = '', lease_expires_at = 0, finished_at = ?, updated_at = ?
			WHERE id = ? AND lease_owner = ? AND status = 'Running'`,
			o.Status, o.Details, o.ErrorCode, o.ErrorMessage, o.Result, o.TotalBytes, o.TotalBytes,
			o.Status, o.TotalBytes, o.TotalBytes, now, now, id, owner)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		ok = n == 1
		return nil
	})
	return ok, err
}

// RetryOperation gives a running operation back to the queue, to be tried
// again no sooner than after delay.
func (s *Store) RetryOperation(ctx context.Context, id, owner string, delay time.Duration, details string) error {
	return s.inTx(ctx, func(tx *txn) error {
		now := s.nowNano()
		_, err := tx.ExecContext(ctx, `UPDATE operations SET lease_owner = '', lease_expires_at = 0, not_before = ?, details = ?, updated_at = ?
			WHERE id = ? AND lease_owner = ? AND status = 'Running'`, now+delay.Nanoseconds(), details, now, id, owner)
		return err
	})
}

// CancelOperation marks an active operation canceled; its worker notices at
// its next heartbeat and cleans up. Canceling a finished operation changes
// nothing. It returns the operation as stored afterwards.
func (s *Store) CancelOperation(ctx context.Context, id string) (*Operation, error) {
	err := s.inTx(ctx, func(tx *txn) error {
		now := s.nowNano()
		_, err := tx.ExecContext(ctx, `UPDATE operations SET status = 'Canceled', details = 'Canceled by request', finished_at = ?, updated_at = ?
			WHERE id = ? AND status IN ('NotStarted', 'Running')`, now, now, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.GetOperation(ctx, id)
}

// CancelOperationsFor cancels the active operations of a kind for images
// that were deleted, and returns the ids of those it canceled.
func (s *Store) CancelOperationsFor(ctx context.Context, kind, repo string, digests []string) ([]string, error) {
	var ids []string
	err := s.inTx(ctx, func(tx *txn) error {
		ids = ids[:0]
		now := s.nowNano()
		for _, d := range digests {
			rows, err := tx.QueryContext(ctx, `UPDATE operations SET status = 'Canceled', details = ?, finished_at = ?, updated_at = ?
				WHERE kind = ? AND repository = ? AND digest = ? AND status IN ('NotStarted', 'Running') RETURNING id`, DetailsImageDeleted, now, now, kind, repo, d)
			if err != nil {
				return err
			}
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					rows.Close()
					return err
				}
				ids = append(ids, id)
			}
			if err := rows.Close(); err != nil {
				return err
			}
		}
		return nil
	})
	return ids, err
}

// ConvertedLayer is a layer converted before, reusable by any image that
// has the same source layer.
type ConvertedLayer struct {
	SourceDigest  string
	FormatVersion string
	Digest        string
	Size          int64
	MediaType     string
	// Annotations of the converted layer's descriptor, JSON.
	Annotations string
}

// GetConvertedLayer returns the conversion of a source layer in a format
// version, or ErrNotFound.
func (s *Store) GetConvertedLayer(ctx context.Context, source, version string) (*ConvertedLayer, error) {
	c := &ConvertedLayer{SourceDigest: source, FormatVersion: version}
	err := s.read.QueryRowContext(ctx, `SELECT digest, size, media_type, annotations FROM converted_layers WHERE source_digest = ? AND format_version = ?`,
		source, version).Scan(&c.Digest, &c.Size, &c.MediaType, &c.Annotations)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return c, err
}

// PutConvertedLayer records a layer conversion.
func (s *Store) PutConvertedLayer(ctx context.Context, c *ConvertedLayer) error {
	return s.inTx(ctx, func(tx *txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO converted_layers(source_digest, format_version, digest, size, media_type, annotations, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(source_digest, format_version) DO UPDATE SET digest = excluded.digest, size = excluded.size,
				media_type = excluded.media_type, annotations = excluded.annotations`,
			c.SourceDigest, c.FormatVersion, c.Digest, c.Size, c.MediaType, c.Annotations, s.nowNano())
		return err
	})
}

// LinkStoredBlob links into repo a blob stored and live anywhere in the
// registry, for a conversion that reuses a layer converted for another
// image. It returns ErrNotFound when the blob is gone.
func (s *Store) LinkStoredBlob(ctx context.Context, repo, dgst string) error {
	return s.inTx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE blobs SET touched_at = ? WHERE digest = ? AND state = 0 AND size >= 0
			AND EXISTS (SELECT 1 FROM repository_blobs l WHERE l.digest = blobs.digest)`, s.nowNano(), dgst)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("blob %s: %w", dgst, ErrNotFound)
		}
		return s.insertLink(ctx, tx, repo, dgst)
	})
}

// LatestOperation returns the most recent operation of a kind for an image,
// whatever its status, or ErrNotFound.
func (s *Store) LatestOperation(ctx context.Context, kind, repo, dgst string) (*Operation, error) {
	o, err := scanOperation(s.read.QueryRowContext(ctx, `SELECT `+operationColumns+` FROM operations
		WHERE kind = ? AND repository = ? AND digest = ? ORDER BY created_at DESC LIMIT 1`, kind, repo, dgst))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("operation for %s@%s: %w", repo, dgst, ErrNotFound)
	}
	return o, err
}

// OperationFilter selects the operations a listing shows; an empty field
// selects every value.
type OperationFilter struct {
	Status     string
	Kind       string
	Repository string
}

// ListOperations lists the operations f selects, newest first (by creation,
// then by id), those after the operation last when it is set, at most n
// (n < 0: all), and whether more follow. A last that is no operation is
// ErrNotFound.
func (s *Store) ListOperations(ctx context.Context, f OperationFilter, last string, n int) ([]*Operation, bool, error) {
	query := `SELECT ` + operationColumns + ` FROM operations WHERE 1 = 1`
	var args []any
	for _, c := range []struct{ column, value string }{{"status", f.Status}, {"kind", f.Kind}, {"repository", f.Repository}} {
		if c.value != "" {
			query += ` AND ` + c.column + ` = ?`
			args = append(args, c.value)
		}
	}
	if last != "" {
		var created int64
		err := s.read.QueryRowContext(ctx, `SELECT created_at FROM operations WHERE id = ?`, last).Scan(&created)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, false, fmt.Errorf("operation %s: %w", last, ErrNotFound)
		}
		if err != nil {
			return nil, false, err
		}
		query += ` AND (created_at < ? OR (created_at = ? AND id < ?))`
		args = append(args, created, created, last)
	}
	limit := n + 1
	if n < 0 {
		limit = -1
	}
	rows, err := s.read.QueryContext(ctx, query+` ORDER BY created_at DESC, id DESC LIMIT ?`, append(args, sqlLimit(limit))...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	out := []*Operation{}
	for rows.Next() {
		o, err := scanOperation(rows)
		if err != nil {
			return nil, false, err
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	if n >= 0 && len(out) > n {
		return out[:n], true, nil
	}
	return out, false, nil
}

// QueuedOperations counts the operations waiting for a worker, by kind.
func (s *Store) QueuedOperations(ctx context.Context) (map[string]int64, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT kind, COUNT(*) FROM operations WHERE status = 'NotStarted' GROUP BY kind`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var kind string
		var n int64
		if err := rows.Scan(&kind, &n); err != nil {
			return nil, err
		}
		out[kind] = n
	}
	return out, rows.Err()
}
