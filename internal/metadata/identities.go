package metadata

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ErrExists is returned when creating something whose name is taken.
var ErrExists = errors.New("already exists")

// ErrInUse is returned when deleting a scope map that tokens still use.
var ErrInUse = errors.New("in use")

// GetUserHash returns the password hash of a user, or ErrNotFound.
func (s *Store) GetUserHash(ctx context.Context, name string) (string, error) {
	var h string
	err := s.read.QueryRowContext(ctx, `SELECT password_hash FROM users WHERE name = ?`, name).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("user %s %w", name, ErrNotFound)
	}
	return h, err
}

// SetUser creates or updates a user's password hash.
func (s *Store) SetUser(ctx context.Context, name, hash string) error {
	return s.inTx(ctx, func(tx *txn) error {
		now := s.nowNano()
		_, err := tx.ExecContext(ctx, `INSERT INTO users(name, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash, updated_at = excluded.updated_at`, name, hash, now, now)
		return err
	})
}

// ScopeMap is a named set of allowed actions.
type ScopeMap struct {
	Name        string
	Description string
	Actions     []string
	Builtin     bool
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// PutScopeMap creates a scope map (ErrExists if the name is taken), or
// with replace set, creates or replaces it.
func (s *Store) PutScopeMap(ctx context.Context, m *ScopeMap, replace bool) error {
	actions, err := json.Marshal(m.Actions)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *txn) error {
		now := s.nowNano()
		q := `INSERT INTO scope_maps(name, description, actions, builtin, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)`
		if replace {
			q += ` ON CONFLICT(name) DO UPDATE SET description = excluded.description, actions = excluded.actions, builtin = excluded.builtin, updated_at = excluded.updated_at`
		} else {
			q += ` ON CONFLICT(name) DO NOTHING`
		}
		res, err := tx.ExecContext(ctx, q, m.Name, m.Description, string(actions), boolInt(m.Builtin), now, now)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("scope map %s %w", m.Name, ErrExists)
		}
		return nil
	})
}

// GetScopeMap reads a scope map, or ErrNotFound.
func (s *Store) GetScopeMap(ctx context.Context, name string) (*ScopeMap, error) {
	maps, err := s.scopeMaps(ctx, `WHERE name = ?`, name)
	if err != nil {
		return nil, err
	}
	if len(maps) == 0 {
		return nil, fmt.Errorf("scope map %s %w", name, ErrNotFound)
	}
	return &maps[0], nil
}

// ScopeMaps lists every scope map, built-in first.
func (s *Store) ScopeMaps(ctx context.Context) ([]ScopeMap, error) {
	return s.scopeMaps(ctx, `ORDER BY builtin DESC, name`)
}

func (s *Store) scopeMaps(ctx context.Context, where string, args ...any) ([]ScopeMap, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT name, description, actions, builtin, created_at, updated_at FROM scope_maps `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []ScopeMap{}
	for rows.Next() {
		var m ScopeMap
		var actions string
		var created, updated int64
		if err := rows.Scan(&m.Name, &m.Description, &actions, &m.Builtin, &created, &updated); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(actions), &m.Actions); err != nil {
			return nil, fmt.Errorf("scope map %s: %w", m.Name, err)
		}
		m.CreatedAt, m.UpdatedAt = time.Unix(0, created), time.Unix(0, updated)
		out = append(out, m)
	}
	return out, rows.Err()
}

// DeleteScopeMap deletes a scope map that no token uses.
func (s *Store) DeleteScopeMap(ctx context.Context, name string) error {
	return s.inTx(ctx, func(tx *txn) error {
		var user string
		err := tx.QueryRowContext(ctx, `SELECT name FROM tokens WHERE scope_map = ? LIMIT 1`, name).Scan(&user)
		if err == nil {
			return fmt.Errorf("scope map %s is %w by token %s", name, ErrInUse, user)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM scope_maps WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("scope map %s %w", name, ErrNotFound)
		}
		return nil
	})
}

// TokenPassword is one of a token's two passwords.
type TokenPassword struct {
	Name      string
	Hash      string
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never
}

// Token is a non-admin identity bound to a scope map.
type Token struct {
	Name      string
	ScopeMap  string
	Enabled   bool
	CreatedAt time.Time
	UpdatedAt time.Time
	Passwords []TokenPassword
}

// CreateToken records a token (ErrExists if the name is taken; ErrNotFound
// if its scope map does not exist).
func (s *Store) CreateToken(ctx context.Context, t *Token) error {
	return s.inTx(ctx, func(tx *txn) error {
		if err := scopeMapExists(ctx, tx, t.ScopeMap); err != nil {
			return err
		}
		now := s.nowNano()
		res, err := tx.ExecContext(ctx, `INSERT INTO tokens(name, scope_map, enabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT(name) DO NOTHING`, t.Name, t.ScopeMap, boolInt(t.Enabled), now, now)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("token %s %w", t.Name, ErrExists)
		}
		for _, p := range t.Passwords {
			if err := setTokenPassword(ctx, tx, t.Name, p); err != nil {
				return err
			}
		}
		return nil
	})
}

func scopeMapExists(ctx context.Context, tx *txn, name string) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM scope_maps WHERE name = ?`, name).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("scope map %s %w", name, ErrNotFound)
	}
	return err
}

func setTokenPassword(ctx context.Context, tx *txn, token string, p TokenPassword) error {
	var expires int64
	if !p.ExpiresAt.IsZero() {
		expires = p.ExpiresAt.UnixNano()
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO token_passwords(token, name, password_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT(token, name) DO UPDATE SET password_hash = excluded.password_hash, created_at = excluded.created_at, expires_at = excluded.expires_at`,
		token, p.Name, p.Hash, p.CreatedAt.UnixNano(), expires)
	return err
}

// SetTokenPassword replaces one password of a token.
func (s *Store) SetTokenPassword(ctx context.Context, token string, p TokenPassword) error {
	return s.inTx(ctx, func(tx *txn) error {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM tokens WHERE name = ?`, token).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("token %s %w", token, ErrNotFound)
		}
		return setTokenPassword(ctx, tx, token, p)
	})
}

// GetToken reads a token with its password hashes, or ErrNotFound.
func (s *Store) GetToken(ctx context.Context, name string) (*Token, error) {
	toks, err := s.tokens(ctx, `WHERE name = ?`, name)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("token %s %w", name, ErrNotFound)
	}
	return &toks[0], nil
}

// Tokens lists every token.
func (s *Store) Tokens(ctx context.Context) ([]Token, error) { return s.tokens(ctx, `ORDER BY name`) }

func (s *Store) tokens(ctx context.Context, where string, args ...any) ([]Token, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT name, scope_map, enabled, created_at, updated_at FROM tokens `+where, args...)
	if err != nil {
		return nil, err
	}
	var out []Token
	for rows.Next() {
		var t Token
		var created, updated int64
		if err := rows.Scan(&t.Name, &t.ScopeMap, &t.Enabled, &created, &updated); err != nil {
			rows.Close()
			return nil, err
		}
		t.CreatedAt, t.UpdatedAt = time.Unix(0, created), time.Unix(0, updated)
		out = append(out, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].Passwords, err = s.tokenPasswords(ctx, out[i].Name); err != nil {
			return nil, err
		}
	}
	if out == nil {
		out = []Token{}
	}
	return out, nil
}

func (s *Store) tokenPasswords(ctx context.Context, token string) ([]TokenPassword, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT name, password_hash, created_at, expires_at FROM token_passwords WHERE token = ? ORDER BY name`, token)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []TokenPassword
	for rows.Next() {
		var p TokenPassword
		var created, expires int64
		if err := rows.Scan(&p.Name, &p.Hash, &created, &expires); err != nil {
			return nil, err
		}
		p.CreatedAt = time.Unix(0, created)
		if expires > 0 {
			p.ExpiresAt = time.Unix(0, expires)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// UpdateToken changes a token's scope map and/or status.
func (s *Store) UpdateToken(ctx context.Context, name string, scopeMap *string, enabled *bool) error {
	return s.inTx(ctx, func(tx *txn) error {
		if scopeMap != nil {
			if err := scopeMapExists(ctx, tx, *scopeMap); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `UPDATE tokens SET scope_map = COALESCE(?, scope_map), enabled = COALESCE(?, enabled), updated_at = ? WHERE name = ?`,
			nullString(scopeMap), nullBool(enabled), s.nowNano(), name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("token %s %w", name, ErrNotFound)
		}
		return nil
	})
}

// DeleteToken deletes a token and its passwords.
func (s *Store) DeleteToken(ctx context.Context, name string) error {
	return s.inTx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("token %s %w", name, ErrNotFound)
		}
		return nil
	})
}

func nullString(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

func nullBool(p *bool) any {
	if p == nil {
		return nil
	}
	return boolInt(*p)
}
