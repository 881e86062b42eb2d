package metadata

import (
	"context"
	"fmt"
	"strings"
)

// copiedTables are the tables CopyTo copies, parents before the rows that
// reference them. Uploads are left out: their parts stay in the old blob
// store, and a client whose upload is cut off starts it again.
var copiedTables = []string{
	"repositories", "blobs", "repository_blobs", "manifests", "manifest_references", "tags",
	"deleted_tags", "deleted_repositories", "operations", "converted_layers",
	"users", "scope_maps", "tokens", "token_passwords", "startup_profiles", "signing_keys",
}

// copyBatch is how many rows go into the destination per transaction.
const copyBatch = 500

// CopyTo copies every record of s into dst (another database, of either
// dialect, migrated to the same schema), table by table. A row dst has
// already (by its key) is left as it is, so a copy cut short can be run
// again and goes on where it stopped. progress, if not nil, hears of each
// table's rows as they are copied.
func (s *Store) CopyTo(ctx context.Context, dst *Store, progress func(table string, rows int64)) error {
	for _, table := range copiedTables {
		n, err := s.copyTable(ctx, dst, table, progress)
		if err != nil {
			return fmt.Errorf("copy %s (after %d rows): %w", table, n, err)
		}
	}
	if dst.dialect == postgres {
		// Ids were copied as they were; new repositories get the next.
		_, err := dst.write.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('repositories', 'id'), GREATEST((SELECT MAX(id) FROM repositories), 1))`)
		if err != nil {
			return fmt.Errorf("continue the repository ids: %w", err)
		}
	}
	return nil
}

func (s *Store) copyTable(ctx context.Context, dst *Store, table string, progress func(string, int64)) (int64, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT * FROM `+table)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, err
	}
	insert := `INSERT INTO ` + table + `(` + strings.Join(cols, ", ") + `) VALUES (` +
		strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + `) ON CONFLICT DO NOTHING`
	var copied int64
	var batch [][]any
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := dst.inTx(ctx, func(tx *txn) error {
			for _, vals := range batch {
				if _, err := tx.ExecContext(ctx, insert, vals...); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		copied += int64(len(batch))
		batch = batch[:0]
		if progress != nil {
			progress(table, copied)
		}
		return nil
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return copied, err
		}
		batch = append(batch, vals)
		if len(batch) == copyBatch {
			if err := flush(); err != nil {
				return copied, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return copied, err
	}
	return copied, flush()
}

// LiveBlobs calls fn with the digest and size of every blob stored and not
// being collected, in digest order.
func (s *Store) LiveBlobs(ctx context.Context, fn func(dgst string, size int64) error) error {
	rows, err := s.read.QueryContext(ctx, `SELECT digest, size FROM blobs WHERE state = 0 AND size >= 0 ORDER BY digest`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var d string
		var size int64
		if err := rows.Scan(&d, &size); err != nil {
			return err
		}
		if err := fn(d, size); err != nil {
			return err
		}
	}
	return rows.Err()
}
