package metadata

import (
	"context"
	"time"
)

// UnlinkUnreferencedBlobs removes links older than cutoff to blobs that no
// manifest of their repository references: layers pushed for a manifest that
// never came. It returns how many links it removed.
func (s *Store) UnlinkUnreferencedBlobs(ctx context.Context, cutoff time.Time) (int64, error) {
	var n int64
	err := s.inTx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM repository_blobs
			WHERE created_at < ? AND NOT EXISTS (
				SELECT 1 FROM manifest_references r
				WHERE r.repository_id = repository_blobs.repository_id
				  AND r.child_digest = repository_blobs.digest AND r.kind = 0)`, cutoff.UnixNano())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// MarkBlobsForCollection marks deleting, and returns, up to limit blobs that
// are linked nowhere and were last touched before cutoff, plus blobs whose
// collection was marked before staleMark and never finished. Once marked, a
// blob cannot be touched or linked until ForgetBlob removes its row.
func (s *Store) MarkBlobsForCollection(ctx context.Context, cutoff, staleMark time.Time, limit int) ([]string, error) {
	var out []string
	err := s.inTx(ctx, func(tx *txn) error {
		out = nil
		rows, err := tx.QueryContext(ctx, `UPDATE blobs SET state = 1, touched_at = ?
			WHERE digest IN (
				SELECT digest FROM blobs b
				WHERE (b.state = 0 AND b.touched_at < ? AND NOT EXISTS (SELECT 1 FROM repository_blobs l WHERE l.digest = b.digest))
				   OR (b.state = 1 AND b.touched_at < ?)
				LIMIT ?)
			RETURNING digest`, s.nowNano(), cutoff.UnixNano(), staleMark.UnixNano(), sqlLimit(limit))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				return err
			}
			out = append(out, d)
		}
		return rows.Err()
	})
	return out, err
}

// ForgetBlob removes the row of a blob whose object has been deleted.
func (s *Store) ForgetBlob(ctx context.Context, dgst string) error {
	return s.inTx(ctx, func(tx *txn) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM blobs WHERE digest = ? AND state = 1`, dgst)
		return err
	})
}
