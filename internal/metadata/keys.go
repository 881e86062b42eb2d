package metadata

import (
	"context"
	"time"
)

// SigningKey is one of the registry's signing keys, kept in the database
// when replicas share them.
type SigningKey struct {
	ID string
	// PrivateKeyPEM is the key itself.
	PrivateKeyPEM []byte
	// Endorsement is the signature, by the key that was current before,
	// that this key succeeds it; empty for the first key.
	Endorsement string
	// Current marks the key that signs now.
	Current   bool
	CreatedAt time.Time
}

// SigningKeys returns every signing key, oldest first.
func (s *Store) SigningKeys(ctx context.Context) ([]SigningKey, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT kid, private_key, endorsement, current, created_at FROM signing_keys ORDER BY created_at, kid`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []SigningKey
	for rows.Next() {
		var k SigningKey
		var pem string
		var created int64
		if err := rows.Scan(&k.ID, &pem, &k.Endorsement, &k.Current, &created); err != nil {
			return nil, err
		}
		k.PrivateKeyPEM, k.CreatedAt = []byte(pem), time.Unix(0, created)
		out = append(out, k)
	}
	return out, rows.Err()
}

// AddSigningKey stores a key (keeping the one stored already under its
// id) and makes it the current one, in one transaction.
func (s *Store) AddSigningKey(ctx context.Context, k SigningKey) error {
	return s.inTx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO signing_keys(kid, private_key, endorsement, created_at) VALUES (?, ?, ?, ?)
			ON CONFLICT(kid) DO NOTHING`, k.ID, string(k.PrivateKeyPEM), k.Endorsement, s.nowNano()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE signing_keys SET current = CASE WHEN kid = ? THEN 1 ELSE 0 END`, k.ID)
		return err
	})
}
