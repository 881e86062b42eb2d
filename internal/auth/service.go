package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/singleflight"

	"github.com/sluicehq/sluice/internal/metadata"
)

var (
	// ErrBadCredentials is returned for a failed login, whatever the
	// reason (unknown user, wrong password, disabled token, expired
	// password); the reason is logged, never told to the client.
	ErrBadCredentials = errors.New("incorrect username or password")
	// ErrTooManyAttempts is returned, as a *TooManyAttemptsError that says
	// how long to wait, when logins as a user name failed too often
	// recently from the caller's address (or, for an address that failed
	// too, from many addresses).
	ErrTooManyAttempts = errors.New("too many failed login attempts")
)

// Options configure the service.
type Options struct {
	// AdminUser and AdminPassword: the admin identity. With no password, one
	// is generated on first start and printed once to Output.
	AdminUser     string
	AdminPassword string
	// AnonymousPull lets callers without credentials pull from every
	// repository.
	AnonymousPull bool
	// TokenTTL is the lifetime of access tokens, RefreshTTL of refresh
	// tokens.
	TokenTTL   time.Duration
	RefreshTTL time.Duration
	// FailedLoginBurst failed logins are allowed per user name and source
	// address, then one per FailedLoginRefill (defaults 10 and 6s); ten
	// times as many per user name across addresses (see failLimiter).
	FailedLoginBurst  int
	FailedLoginRefill time.Duration
	// Keys are the signing keys; nil means those of KeyDir.
	Keys *KeyRing
	// KeyDir holds the signing keys when Keys is nil.
	KeyDir string
	// Output receives the generated admin password.
	Output io.Writer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Service authenticates callers and issues and verifies tokens.
type Service struct {
	meta IdentityStore
	keys *KeyRing
	opts Options
	log  *slog.Logger

	limiter *failLimiter

	mu    sync.Mutex
	cache map[[32]byte]cachedLogin
	// verifying shares one password check among concurrent logins with
	// the same credentials: many nodes starting at once with one pull
	// token would otherwise each pay bcrypt before the cache has it.
	verifying singleflight.Group
	// tokenStates remembers whether token identities are enabled, for
	// access tokens (VerifyAccess).
	tokenStates map[string]tokenState
}

// tokenState is what VerifyAccess checks of a token identity: whether it
// is enabled, and which generation of each password is current.
type tokenState struct {
	enabled   bool
	passwords []passwordGeneration
	until     time.Time
}

// passwordGeneration is one current password of a token: its creation
// time (Unix nanoseconds) is its generation, stamped into the tokens
// issued for it; regenerating the password makes a new one.
type passwordGeneration struct {
	name    string
	created int64
	expires time.Time
}

// current reports whether tokens issued for the password name of
// generation created are still good at now.
func (st tokenState) current(name string, created int64, now time.Time) bool {
	for _, p := range st.passwords {
		if p.name == name && p.created == created {
			return p.expires.IsZero() || now.Before(p.expires)
		}
	}
	return false
}

// revocationCacheTTL bounds how long VerifyAccess trusts what it read of a
// token identity: a token disabled, deleted or given a new password is
// refused on every replica within it even when the change notice is lost
// (changes made here, or announced by another replica, drop it at once).
const revocationCacheTTL = time.Second

type cachedLogin struct {
	id    *Identity
	until time.Time
}

// loginCacheTTL bounds how long a verified password is remembered, so a
// basic-auth client does not pay bcrypt on every request, while a revoked
// credential stops working within it.
const loginCacheTTL = 30 * time.Second

// NewService opens the signing keys, installs the built-in scope maps and
// makes sure the admin user exists.
func NewService(ctx context.Context, meta IdentityStore, opts Options, log *slog.Logger) (*Service, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = 5 * time.Minute
	}
	if opts.RefreshTTL <= 0 {
		opts.RefreshTTL = 3 * time.Hour
	}
	if opts.AdminUser == "" {
		opts.AdminUser = "admin"
	}
	if opts.FailedLoginBurst <= 0 {
		opts.FailedLoginBurst = 10
	}
	if opts.FailedLoginRefill <= 0 {
		opts.FailedLoginRefill = 6 * time.Second
	}
	keys := opts.Keys
	if keys == nil {
		var err error
		if keys, err = OpenKeyRing(opts.KeyDir); err != nil {
			return nil, err
		}
	}
	s := &Service{meta: meta, keys: keys, opts: opts, log: log, limiter: newFailLimiter(opts.FailedLoginBurst, opts.FailedLoginRefill), cache: map[[32]byte]cachedLogin{}, tokenStates: map[string]tokenState{}}
	if feed, ok := meta.(changeFeed); ok {
		feed.Subscribe(ctx, func(topic string) {
			if topic == identitiesTopic || topic == "" {
				s.dropLogins()
			}
		})
	}
	if err := s.installBuiltinScopeMaps(ctx); err != nil {
		return nil, err
	}
	if err := s.bootstrapAdmin(ctx); err != nil {
		if cause := metadata.NoSpace(err); cause != nil {
			// A registry on a full disk still serves pulls to the
			// identities it has: the admin keeps its stored password.
			log.Error("cannot store the admin password: the metadata database is full; the admin's stored password, if any, stays in force",
				"user", s.opts.AdminUser, "err", err)
			return s, nil
		}
		return nil, err
	}
	return s, nil
}

// installBuiltinScopeMaps writes the built-in scope maps that are missing
// or differ from this version's. Those already stored as they should be
// are not written again, so a start on a full disk writes nothing; one
// that cannot be written for lack of space is logged, and the start goes
// on with what is stored.
func (s *Service) installBuiltinScopeMaps(ctx context.Context) error {
	names := make([]string, 0, len(BuiltinScopeMaps))
	for name := range BuiltinScopeMaps {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		want := &metadata.ScopeMap{Name: name, Description: "Built-in scope map", Actions: BuiltinScopeMaps[name], Builtin: true}
		have, err := s.meta.GetScopeMap(ctx, name)
		if err == nil && have.Builtin && have.Description == want.Description && slices.Equal(have.Actions, want.Actions) {
			continue
		}
		if err != nil && !errors.Is(err, metadata.ErrNotFound) {
			return fmt.Errorf("read built-in scope map %s: %w", name, err)
		}
		if err := s.meta.PutScopeMap(ctx, want, true); err != nil {
			if metadata.NoSpace(err) != nil {
				s.log.Error("cannot install a built-in scope map: the metadata database is full; the stored one, if any, stays until a start that can write it",
					"scope_map", name, "err", err)
				continue
			}
			return fmt.Errorf("install built-in scope map %s: %w", name, err)
		}
	}
	return nil
}

// bootstrapAdmin stores the admin password given in the configuration, or
// generates one on the very first start and prints it once.
func (s *Service) bootstrapAdmin(ctx context.Context) error {
	hash, err := s.meta.GetUserHash(ctx, s.opts.AdminUser)
	switch {
	case s.opts.AdminPassword != "":
		if err == nil && bcrypt.CompareHashAndPassword([]byte(hash), []byte(s.opts.AdminPassword)) == nil {
			return nil
		}
		return s.setAdminPassword(ctx, s.opts.AdminPassword)
	case errors.Is(err, metadata.ErrNotFound):
		pw := generatePassword()
		if err := s.setAdminPassword(ctx, pw); err != nil {
			return err
		}
		if s.opts.Output != nil {
			fmt.Fprintf(s.opts.Output, "\nGenerated password for the admin user %q (shown once; set SLUICE_ADMIN_PASSWORD to choose one):\n\n    %s\n\n", s.opts.AdminUser, pw)
		}
		return nil
	}
	return err
}

func (s *Service) setAdminPassword(ctx context.Context, pw string) error {
	hash, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	if err := s.meta.SetUser(ctx, s.opts.AdminUser, string(hash)); err != nil {
		return err
	}
	s.identitiesChanged(ctx)
	return nil
}

// generatePassword returns 32 random bytes, URL-safe base64.
func generatePassword() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Anonymous is the identity of a caller without credentials.
func (s *Service) Anonymous() *Identity {
	id := &Identity{Kind: Anonymous, Name: "anonymous"}
	if s.opts.AnonymousPull {
		id.grants = []grant{{pattern: "*", action: ActionPull}}
	}
	return id
}

// Login checks a username and password (the admin's, or a token's). Failed
// attempts are limited per user name and source address and logged without
// secrets.
func (s *Service) Login(ctx context.Context, source, username, password string) (*Identity, error) {
	now := s.opts.Now()
	if wait := s.limiter.wait(now, source, username); wait > 0 {
		s.log.Warn("login refused: too many failures", "user", username, "source", source, "wait", wait)
		return nil, &TooManyAttemptsError{Wait: wait}
	}
	key := sha256.Sum256([]byte(username + "\x00" + password))
	s.mu.Lock()
	c, ok := s.cache[key]
	s.mu.Unlock()
	if ok && now.Before(c.until) {
		return c.id, nil
	}
	type verified struct {
		id     *Identity
		reason string
	}
	v, _, _ := s.verifying.Do(string(key[:]), func() (any, error) {
		// The check serves every caller waiting for it: none of their
		// cancellations may fail it for the others.
		id, reason := s.verify(context.WithoutCancel(ctx), username, password, now)
		if id != nil {
			s.mu.Lock()
			s.cache[key] = cachedLogin{id: id, until: now.Add(loginCacheTTL)}
			s.mu.Unlock()
		}
		return verified{id, reason}, nil
	})
	res := v.(verified)
	if res.id == nil {
		s.limiter.failed(now, source, username)
		s.log.Warn("login failed", "user", username, "source", source, "reason", res.reason)
		return nil, ErrBadCredentials
	}
	return res.id, nil
}

// verify checks credentials; on failure it says why, for the log.
func (s *Service) verify(ctx context.Context, username, password string, now time.Time) (*Identity, string) {
	if username == s.opts.AdminUser {
		hash, err := s.meta.GetUserHash(ctx, username)
		if err != nil {
			return nil, "admin user unreadable: " + err.Error()
		}
		if bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) != nil {
			return nil, "wrong password"
		}
		return &Identity{Kind: AdminUser, Name: username, password: adminPasswordName, passwordCreated: adminGeneration(hash)}, ""
	}
	tok, err := s.meta.GetToken(ctx, username)
	if err != nil {
		return nil, "unknown user"
	}
	if !tok.Enabled {
		return nil, "token disabled"
	}
	for _, p := range tok.Passwords {
		if bcrypt.CompareHashAndPassword([]byte(p.Hash), []byte(password)) != nil {
			continue
		}
		if !p.ExpiresAt.IsZero() && now.After(p.ExpiresAt) {
			return nil, p.Name + " expired"
		}
		id, err := s.tokenIdentity(ctx, tok)
		if err != nil {
			return nil, err.Error()
		}
		id.password, id.passwordCreated = p.Name, p.CreatedAt.UnixNano()
		return id, ""
	}
	return nil, "wrong password"
}

func (s *Service) tokenIdentity(ctx context.Context, tok *metadata.Token) (*Identity, error) {
	m, err := s.meta.GetScopeMap(ctx, tok.ScopeMap)
	if err != nil {
		return nil, fmt.Errorf("scope map of token %s: %w", tok.Name, err)
	}
	grants, err := parseGrants(m.Actions)
	if err != nil {
		return nil, err
	}
	return &Identity{Kind: TokenUser, Name: tok.Name, grants: grants}, nil
}

// identitiesTopic is the change notice of users, tokens and scope maps.
const identitiesTopic = "identities"

// changeFeed is how processes sharing a database (replicas on PostgreSQL)
// tell each other of changes; the metadata store is one.
type changeFeed interface {
	Notify(ctx context.Context, topic string) error
	Subscribe(ctx context.Context, fn func(topic string))
}

// identitiesChanged drops the logins remembered here and tells the other
// processes sharing the database to drop theirs: a token disabled,
// deleted or given other rights, or a password changed, takes effect on
// every replica at once.
func (s *Service) identitiesChanged(ctx context.Context) {
	s.dropLogins()
	if feed, ok := s.meta.(changeFeed); ok {
		if err := feed.Notify(ctx, identitiesTopic); err != nil {
			s.log.Warn("could not tell the other replicas that identities changed; they notice within the login cache's lifetime", "err", err, "ttl", loginCacheTTL)
		}
	}
}

func (s *Service) dropLogins() {
	s.mu.Lock()
	s.cache = map[[32]byte]cachedLogin{}
	s.tokenStates = map[string]tokenState{}
	s.mu.Unlock()
}

// IssueAccess issues an access token for the identity, granting the part of
// the requested accesses it is allowed. It returns the token, what was
// granted and the lifetime.
func (s *Service) IssueAccess(id *Identity, audience string, requested []Access) (string, []Access, time.Duration, error) {
	granted := id.Grant(requested)
	now := s.opts.Now()
	c := &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: issuer, Subject: id.Name, Audience: jwt.ClaimStrings{audience}, ID: newJTI(),
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(s.opts.TokenTTL)),
		},
		Access: granted, Kind: kindAccess, IdentityKind: id.Kind,
		// The password's generation, so that regenerating it ends this
		// token too (VerifyAccess).
		Password: id.password, PasswordCreated: id.passwordCreated,
	}
	t, err := s.keys.sign(c)
	return t, granted, s.opts.TokenTTL, err
}

// IssueRefresh issues a refresh token for an authenticated identity.
func (s *Service) IssueRefresh(id *Identity, audience string) (string, error) {
	if id.Kind == Anonymous {
		return "", errors.New("anonymous callers get no refresh token")
	}
	now := s.opts.Now()
	return s.keys.sign(&Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: issuer, Subject: id.Name, Audience: jwt.ClaimStrings{audience}, ID: newJTI(),
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(s.opts.RefreshTTL)),
		},
		Kind: kindRefresh, IdentityKind: id.Kind, Password: id.password, PasswordCreated: id.passwordCreated,
	})
}

// Refresh verifies a refresh token and returns its identity, which must
// still be valid: a token disabled, deleted, or whose password was
// regenerated or expired since, is refused.
func (s *Service) Refresh(ctx context.Context, raw, audience string) (*Identity, error) {
	c, err := s.keys.parse(raw, audience, kindRefresh, s.opts.Now())
	if err != nil {
		return nil, err
	}
	id, err := s.resolve(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTokenInvalid, err)
	}
	return id, nil
}

// resolve finds the identity a token's claims name, as it is now.
func (s *Service) resolve(ctx context.Context, c *Claims) (*Identity, error) {
	switch c.IdentityKind {
	case AdminUser:
		if c.Subject != s.opts.AdminUser {
			return nil, errors.New("not the admin user")
		}
		if c.Password != "" {
			st, err := s.adminState(ctx, s.opts.Now())
			if err != nil {
				return nil, err
			}
			if !st.current(c.Password, c.PasswordCreated, s.opts.Now()) {
				return nil, errors.New("the admin password this token was issued for was changed")
			}
		}
		return &Identity{Kind: AdminUser, Name: c.Subject, password: c.Password, passwordCreated: c.PasswordCreated}, nil
	case TokenUser:
		tok, err := s.meta.GetToken(ctx, c.Subject)
		if err != nil {
			return nil, err
		}
		if !tok.Enabled {
			return nil, errors.New("token disabled")
		}
		if c.Password != "" {
			valid := false
			for _, p := range tok.Passwords {
				if p.Name == c.Password && p.CreatedAt.UnixNano() == c.PasswordCreated && (p.ExpiresAt.IsZero() || s.opts.Now().Before(p.ExpiresAt)) {
					valid = true
				}
			}
			if !valid {
				return nil, errors.New("the password this token was issued for was regenerated or expired")
			}
		}
		id, err := s.tokenIdentity(ctx, tok)
		if err != nil {
			return nil, err
		}
		id.password, id.passwordCreated = c.Password, c.PasswordCreated
		return id, nil
	}
	return s.Anonymous(), nil
}

// VerifyAccess verifies an access token presented on a request. One
// issued to a token identity that has since been disabled or deleted, or
// for a password since regenerated or expired, is refused: revoking a
// token or its password ends its access tokens at once, on every replica,
// rather than when they expire.
func (s *Service) VerifyAccess(ctx context.Context, raw, audience string) (*Claims, error) {
	now := s.opts.Now()
	c, err := s.keys.parse(raw, audience, kindAccess, now)
	if err != nil {
		return c, err
	}
	if c.IdentityKind == AdminUser && c.Password != "" {
		st, err := s.adminState(ctx, now)
		if err != nil {
			return nil, err
		}
		if c.Subject != s.opts.AdminUser || !st.current(c.Password, c.PasswordCreated, now) {
			return nil, fmt.Errorf("%w: the admin password this access token was issued for was changed", ErrTokenInvalid)
		}
		return c, nil
	}
	if c.IdentityKind != TokenUser {
		return c, err
	}
	st, err := s.tokenState(ctx, c.Subject, now)
	if err != nil {
		return nil, err
	}
	if !st.enabled {
		return nil, fmt.Errorf("%w: token %s was disabled or deleted", ErrTokenInvalid, c.Subject)
	}
	// Access tokens issued before passwords were stamped into them carry
	// none; they expire within the token lifetime.
	if c.Password != "" && !st.current(c.Password, c.PasswordCreated, now) {
		return nil, fmt.Errorf("%w: the %s of token %s this access token was issued for was regenerated or expired", ErrTokenInvalid, c.Password, c.Subject)
	}
	return c, nil
}

// tokenState reads whether the token identity exists and is enabled, and
// its current passwords, from what was read before when it can: identity
// changes drop it (identitiesChanged, here or on another replica), and it
// is read again after revocationCacheTTL in any case.
func (s *Service) tokenState(ctx context.Context, name string, now time.Time) (tokenState, error) {
	s.mu.Lock()
	e, ok := s.tokenStates[name]
	s.mu.Unlock()
	if ok && now.Before(e.until) {
		return e, nil
	}
	tok, err := s.meta.GetToken(ctx, name)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return tokenState{}, err
	}
	st := tokenState{until: now.Add(revocationCacheTTL)}
	if err == nil {
		st.enabled = tok.Enabled
		for _, p := range tok.Passwords {
			st.passwords = append(st.passwords, passwordGeneration{name: p.Name, created: p.CreatedAt.UnixNano(), expires: p.ExpiresAt})
		}
	}
	s.mu.Lock()
	s.tokenStates[name] = st
	s.mu.Unlock()
	return st, nil
}

// The admin user's tokens carry a generation of its password too: a hash
// of the stored bcrypt hash, which changes with the password (and its
// salt). Changing adminPassword and restarting one replica ends the admin's
// tokens on all of them within revocationCacheTTL.
const adminPasswordName = "adminPassword"

func adminGeneration(hash string) int64 {
	sum := sha256.Sum256([]byte(hash))
	// 52 bits: a JSON number any decoder reads back exactly.
	return int64(binary.BigEndian.Uint64(sum[:8])>>12) | 1
}

// adminState reads the admin password's current generation, cached as
// tokenState is. The key cannot be a token name: those have no NUL.
func (s *Service) adminState(ctx context.Context, now time.Time) (tokenState, error) {
	const key = "\x00admin"
	s.mu.Lock()
	e, ok := s.tokenStates[key]
	s.mu.Unlock()
	if ok && now.Before(e.until) {
		return e, nil
	}
	hash, err := s.meta.GetUserHash(ctx, s.opts.AdminUser)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return tokenState{}, err
	}
	st := tokenState{until: now.Add(revocationCacheTTL)}
	if err == nil {
		st.enabled = true
		st.passwords = []passwordGeneration{{name: adminPasswordName, created: adminGeneration(hash)}}
	}
	s.mu.Lock()
	s.tokenStates[key] = st
	s.mu.Unlock()
	return st, nil
}

// IdentityOf resolves the identity behind verified access claims, for
// decisions the claims alone cannot make (which repositories a catalog
// lists).
func (s *Service) IdentityOf(ctx context.Context, c *Claims) (*Identity, error) {
	return s.resolve(ctx, c)
}

// RotateKeys makes a new signing key current; tokens signed by the old
// ones stay valid until they expire.
func (s *Service) RotateKeys() (string, error) { return s.keys.Rotate() }

// KeyIDs lists the signing keys.
func (s *Service) KeyIDs() []string { return s.keys.IDs() }

// SigningKeyForTest exposes the current signing key, for tests that forge
// tokens with it.
func (s *Service) SigningKeyForTest() (string, any) { return s.keys.signing() }
