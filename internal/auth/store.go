package auth

import (
	"context"

	"github.com/sluicehq/sluice/internal/metadata"
)

// IdentityStore is what the auth service keeps in the metadata store: the
// admin user's password hash, scope maps, and tokens with their password
// hashes. Lookups of what is not there return metadata.ErrNotFound; names
// taken, metadata.ErrExists; a scope map still used, metadata.ErrInUse.
type IdentityStore interface {
	GetUserHash(ctx context.Context, name string) (string, error)
	SetUser(ctx context.Context, name, hash string) error

	// PutScopeMap creates a scope map, or with replace set creates or
	// replaces it.
	PutScopeMap(ctx context.Context, m *metadata.ScopeMap, replace bool) error
	GetScopeMap(ctx context.Context, name string) (*metadata.ScopeMap, error)
	ScopeMaps(ctx context.Context) ([]metadata.ScopeMap, error)
	DeleteScopeMap(ctx context.Context, name string) error

	CreateToken(ctx context.Context, t *metadata.Token) error
	SetTokenPassword(ctx context.Context, token string, p metadata.TokenPassword) error
	GetToken(ctx context.Context, name string) (*metadata.Token, error)
	Tokens(ctx context.Context) ([]metadata.Token, error)
	UpdateToken(ctx context.Context, name string, scopeMap *string, enabled *bool) error
	DeleteToken(ctx context.Context, name string) error
}
