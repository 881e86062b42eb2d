package auth

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/sluicehq/sluice/internal/metadata"
)

// Errors of identity management; the API maps them to its codes. Those the
// store finds are the store's own, whose messages already say what and
// why ("token ci not found"): wrapping them in a sentinel of this package
// would say it twice.
var (
	ErrNameInvalid = errors.New("invalid name")
	ErrNotFound    = metadata.ErrNotFound
	ErrExists      = metadata.ErrExists
	ErrBuiltin     = errors.New("built-in scope maps cannot be changed")
	ErrInUse       = metadata.ErrInUse
	// ErrExpiryInvalid: a password expiry that is not in the future.
	ErrExpiryInvalid = errors.New("invalid expiry")
)

var (
	tokenNameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{4,49}$`)
	scopeMapNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{4,49}$`)
)

// PasswordNames are the two passwords of every token.
var PasswordNames = []string{"password1", "password2"}

// Password is a token password as the API shows it; Value is set only when
// it was just generated.
type Password struct {
	Name      string
	Value     string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// TokenInfo is a token as the API shows it.
type TokenInfo struct {
	Name      string
	ScopeMap  string
	Enabled   bool
	CreatedAt time.Time
	Passwords []Password
}

// newPasswords generates the named passwords, returning them with values
// and hashed for storing.
func (s *Service) newPasswords(names []string, expiry time.Time) ([]Password, []metadata.TokenPassword, error) {
	if !expiry.IsZero() && !expiry.After(s.opts.Now()) {
		return nil, nil, fmt.Errorf("%w: %s is not in the future: give a later expiry, or none for passwords that do not expire",
			ErrExpiryInvalid, expiry.UTC().Format(time.RFC3339))
	}
	now := s.opts.Now()
	var shown []Password
	var stored []metadata.TokenPassword
	for _, n := range names {
		if !slices.Contains(PasswordNames, n) {
			return nil, nil, fmt.Errorf("%w %q for a password: use password1 or password2", ErrNameInvalid, n)
		}
		v := generatePassword()
		h, err := bcrypt.GenerateFromPassword([]byte(v), bcrypt.DefaultCost)
		if err != nil {
			return nil, nil, err
		}
		shown = append(shown, Password{Name: n, Value: v, CreatedAt: now, ExpiresAt: expiry})
		stored = append(stored, metadata.TokenPassword{Name: n, Hash: string(h), CreatedAt: now, ExpiresAt: expiry})
	}
	return shown, stored, nil
}

// CreateToken creates a token bound to a scope map, with both passwords
// generated (and shown only in this answer).
func (s *Service) CreateToken(ctx context.Context, name, scopeMap string, enabled bool, expiry time.Time) (*TokenInfo, error) {
	if !tokenNameRE.MatchString(name) || name == s.opts.AdminUser {
		return nil, fmt.Errorf("%w %q for a token: use 5 to 50 letters, digits or hyphens, starting with a letter or digit, and not the admin user's name", ErrNameInvalid, name)
	}
	shown, stored, err := s.newPasswords(PasswordNames, expiry)
	if err != nil {
		return nil, err
	}
	t := &metadata.Token{Name: name, ScopeMap: scopeMap, Enabled: enabled, Passwords: stored}
	if err := s.meta.CreateToken(ctx, t); err != nil {
		return nil, err
	}
	info, err := s.GetToken(ctx, name)
	if err != nil {
		return nil, err
	}
	info.Passwords = shown
	return info, nil
}

// GenerateCredentials regenerates some passwords of a token (both when
// names is empty); the old ones stop working at once.
func (s *Service) GenerateCredentials(ctx context.Context, name string, names []string, expiry time.Time) (*TokenInfo, error) {
	if len(names) == 0 {
		names = PasswordNames
	}
	shown, stored, err := s.newPasswords(names, expiry)
	if err != nil {
		return nil, err
	}
	for _, p := range stored {
		if err := s.meta.SetTokenPassword(ctx, name, p); err != nil {
			return nil, err
		}
	}
	s.identitiesChanged(ctx)
	info, err := s.GetToken(ctx, name)
	if err != nil {
		return nil, err
	}
	for i, p := range info.Passwords {
		for _, sp := range shown {
			if sp.Name == p.Name {
				info.Passwords[i] = sp
			}
		}
	}
	return info, nil
}

// GetToken reads a token (without password values).
func (s *Service) GetToken(ctx context.Context, name string) (*TokenInfo, error) {
	t, err := s.meta.GetToken(ctx, name)
	if err != nil {
		return nil, err
	}
	return tokenInfo(t), nil
}

func tokenInfo(t *metadata.Token) *TokenInfo {
	info := &TokenInfo{Name: t.Name, ScopeMap: t.ScopeMap, Enabled: t.Enabled, CreatedAt: t.CreatedAt}
	for _, p := range t.Passwords {
		info.Passwords = append(info.Passwords, Password{Name: p.Name, CreatedAt: p.CreatedAt, ExpiresAt: p.ExpiresAt})
	}
	return info
}

// ListTokens lists every token.
func (s *Service) ListTokens(ctx context.Context) ([]*TokenInfo, error) {
	toks, err := s.meta.Tokens(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*TokenInfo, len(toks))
	for i := range toks {
		out[i] = tokenInfo(&toks[i])
	}
	return out, nil
}

// UpdateToken changes a token's scope map and/or status.
func (s *Service) UpdateToken(ctx context.Context, name string, scopeMap *string, enabled *bool) (*TokenInfo, error) {
	if err := s.meta.UpdateToken(ctx, name, scopeMap, enabled); err != nil {
		return nil, err
	}
	s.identitiesChanged(ctx)
	return s.GetToken(ctx, name)
}

// DeleteToken deletes a token; its passwords stop working at once.
func (s *Service) DeleteToken(ctx context.Context, name string) error {
	if err := s.meta.DeleteToken(ctx, name); err != nil {
		return err
	}
	s.identitiesChanged(ctx)
	return nil
}

// CreateScopeMap creates a scope map from actions such as
// "repositories/team-a/*/content/read".
func (s *Service) CreateScopeMap(ctx context.Context, name, description string, actions []string) (*metadata.ScopeMap, error) {
	if !scopeMapNameRE.MatchString(name) {
		return nil, fmt.Errorf("%w %q for a scope map: use 5 to 50 letters, digits, hyphens or underscores, starting with a letter or digit", ErrNameInvalid, name)
	}
	if err := checkActions(actions); err != nil {
		return nil, err
	}
	if err := s.meta.PutScopeMap(ctx, &metadata.ScopeMap{Name: name, Description: description, Actions: dedupe(actions)}, false); err != nil {
		return nil, err
	}
	return s.GetScopeMap(ctx, name)
}

func checkActions(actions []string) error {
	if len(actions) == 0 {
		return fmt.Errorf("%w: a scope map needs at least one action", ErrActionInvalid)
	}
	_, err := parseGrants(actions)
	return err
}

func dedupe(in []string) []string {
	var out []string
	for _, a := range in {
		a = strings.TrimSpace(a)
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// UpdateScopeMap adds and removes actions and optionally changes the
// description. Built-in maps cannot change.
func (s *Service) UpdateScopeMap(ctx context.Context, name string, add, remove []string, description *string) (*metadata.ScopeMap, error) {
	m, err := s.meta.GetScopeMap(ctx, name)
	if err != nil {
		return nil, err
	}
	if m.Builtin {
		return nil, fmt.Errorf("%w: %s", ErrBuiltin, name)
	}
	actions := dedupe(append(m.Actions, add...))
	actions = slices.DeleteFunc(actions, func(a string) bool { return slices.Contains(remove, a) })
	if err := checkActions(actions); err != nil {
		return nil, err
	}
	m.Actions = actions
	if description != nil {
		m.Description = *description
	}
	if err := s.meta.PutScopeMap(ctx, m, true); err != nil {
		return nil, err
	}
	s.identitiesChanged(ctx)
	return s.GetScopeMap(ctx, name)
}

// GetScopeMap reads a scope map.
func (s *Service) GetScopeMap(ctx context.Context, name string) (*metadata.ScopeMap, error) {
	m, err := s.meta.GetScopeMap(ctx, name)
	return m, err
}

// ListScopeMaps lists every scope map, built-in first.
func (s *Service) ListScopeMaps(ctx context.Context) ([]metadata.ScopeMap, error) {
	return s.meta.ScopeMaps(ctx)
}

// DeleteScopeMap deletes a scope map no token uses; built-in maps stay.
func (s *Service) DeleteScopeMap(ctx context.Context, name string) error {
	m, err := s.meta.GetScopeMap(ctx, name)
	if err != nil {
		return err
	}
	if m.Builtin {
		return fmt.Errorf("%w: %s", ErrBuiltin, name)
	}
	err = s.meta.DeleteScopeMap(ctx, name)
	if errors.Is(err, ErrInUse) {
		return fmt.Errorf("%w; give the token another scope map, or delete it, first", err)
	}
	return err
}
