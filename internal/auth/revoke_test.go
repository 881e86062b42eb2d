package auth

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/metadata"
)

// An access token issued to a token identity is refused as soon as the
// token is disabled or deleted, not when it expires.
func TestAccessTokenOfRevokedToken(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	meta, err := metadata.OpenSQLite(ctx, filepath.Join(dir, "sluice.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	s, err := NewService(ctx, meta, Options{AdminPassword: "the-admin-password", KeyDir: filepath.Join(dir, "keys")}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.CreateToken(ctx, "ci-reader", "_repositories_pull", true, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Login(ctx, "127.0.0.1", "ci-reader", info.Passwords[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	raw, _, _, err := s.IssueAccess(id, "registry.test", []Access{{Type: "repository", Name: "app", Actions: []string{"pull"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyAccess(ctx, raw, "registry.test"); err != nil {
		t.Fatalf("the access token of an enabled token: %v", err)
	}
	disabled := false
	if _, err := s.UpdateToken(ctx, "ci-reader", nil, &disabled); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyAccess(ctx, raw, "registry.test"); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("the access token of a disabled token: %v, want ErrTokenInvalid", err)
	}
	enabled := true
	if _, err := s.UpdateToken(ctx, "ci-reader", nil, &enabled); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyAccess(ctx, raw, "registry.test"); err != nil {
		t.Fatalf("the access token once the token is enabled again: %v", err)
	}
	if err := s.DeleteToken(ctx, "ci-reader"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyAccess(ctx, raw, "registry.test"); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("the access token of a deleted token: %v, want ErrTokenInvalid", err)
	}
}

// revocationEnv is two auth services over one SQLite database, as two
// replicas would be, on a clock the test moves.
type revocationEnv struct {
	a, b *Service
	now  atomic.Int64 // Unix nanoseconds
}

func newRevocationEnv(t *testing.T) *revocationEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	e := &revocationEnv{}
	e.now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, e.now.Load()) }
	keys, err := OpenKeyRing(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, s := range []**Service{&e.a, &e.b} {
		meta, err := metadata.OpenSQLite(ctx, filepath.Join(dir, "sluice.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { meta.Close() })
		if *s, err = NewService(ctx, meta, Options{AdminPassword: "the-admin-password", Keys: keys, Now: clock}, log); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *revocationEnv) advance(d time.Duration) { e.now.Add(int64(d)) }

// Regenerating a token's password ends the access and refresh tokens
// issued for it: at once on the replica that regenerated it, within a
// second on another that already checked them, whatever became of the
// change notice. Tokens issued for the other password keep working.
func TestRegeneratedPasswordRevokesItsTokens(t *testing.T) {
	ctx := context.Background()
	e := newRevocationEnv(t)
	info, err := e.a.CreateToken(ctx, "ci-pusher", "_repositories_push", true, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	type issued struct{ access, refresh string }
	issue := func(password string) issued {
		id, err := e.a.Login(ctx, "127.0.0.1", "ci-pusher", password)
		if err != nil {
			t.Fatal(err)
		}
		access, _, _, err := e.a.IssueAccess(id, "registry.test", []Access{{Type: "repository", Name: "app", Actions: []string{"pull", "push"}}})
		if err != nil {
			t.Fatal(err)
		}
		refresh, err := e.a.IssueRefresh(id, "registry.test")
		if err != nil {
			t.Fatal(err)
		}
		return issued{access, refresh}
	}
	first, second := issue(info.Passwords[0].Value), issue(info.Passwords[1].Value)
	valid := func(s *Service, tok issued) error {
		if _, err := s.VerifyAccess(ctx, tok.access, "registry.test"); err != nil {
			return err
		}
		_, err := s.Refresh(ctx, tok.refresh, "registry.test")
		return err
	}
	for _, s := range []*Service{e.a, e.b} {
		if err := valid(s, first); err != nil {
			t.Fatalf("tokens before the password was regenerated: %v", err)
		}
	}
	// A moment later, so that the regenerated password has another
	// generation whatever the clock's resolution.
	e.advance(time.Millisecond)
	if _, err := e.a.GenerateCredentials(ctx, "ci-pusher", []string{"password1"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.VerifyAccess(ctx, first.access, "registry.test"); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("an access token of the regenerated password on the replica that regenerated it: %v, want ErrTokenInvalid", err)
	}
	for _, s := range []*Service{e.a, e.b} {
		if _, err := s.Refresh(ctx, first.refresh, "registry.test"); !errors.Is(err, ErrTokenInvalid) {
			t.Fatalf("a refresh token of the regenerated password: %v, want ErrTokenInvalid", err)
		}
	}
	// The promise is one second (docs/security.md).
	e.advance(time.Second)
	if _, err := e.b.VerifyAccess(ctx, first.access, "registry.test"); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("an access token of the regenerated password on another replica a second later: %v, want ErrTokenInvalid", err)
	}
	for _, s := range []*Service{e.a, e.b} {
		if err := valid(s, second); err != nil {
			t.Fatalf("tokens of the password that was not regenerated: %v", err)
		}
	}
}

// A password that expires ends its access tokens with it.
func TestExpiredPasswordEndsItsAccessTokens(t *testing.T) {
	ctx := context.Background()
	e := newRevocationEnv(t)
	expiry := time.Unix(0, e.now.Load()).Add(time.Hour)
	info, err := e.a.CreateToken(ctx, "short-lived", "_repositories_pull", true, expiry)
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.a.Login(ctx, "127.0.0.1", "short-lived", info.Passwords[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	e.advance(time.Hour - time.Minute)
	raw, _, _, err := e.a.IssueAccess(id, "registry.test", []Access{{Type: "repository", Name: "app", Actions: []string{"pull"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.VerifyAccess(ctx, raw, "registry.test"); err != nil {
		t.Fatalf("before the password expires: %v", err)
	}
	e.advance(2 * time.Minute)
	if _, err := e.a.VerifyAccess(ctx, raw, "registry.test"); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("an access token of an expired password, itself not expired: %v, want ErrTokenInvalid", err)
	}
}

// An expiry that is not in the future is refused, and nothing is stored.
func TestExpiryInThePastIsRefused(t *testing.T) {
	ctx := context.Background()
	e := newRevocationEnv(t)
	now := time.Unix(0, e.now.Load())
	for _, expiry := range []time.Time{now.Add(-time.Hour), now} {
		_, err := e.a.CreateToken(ctx, "too-late", "_repositories_pull", true, expiry)
		if !errors.Is(err, ErrExpiryInvalid) || !strings.Contains(err.Error(), "not in the future") {
			t.Fatalf("CreateToken expiring at %v (now %v): %v, want ErrExpiryInvalid", expiry, now, err)
		}
	}
	if _, err := e.a.GetToken(ctx, "too-late"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused token was stored: %v", err)
	}
	info, err := e.a.CreateToken(ctx, "in-time", "_repositories_pull", true, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.GenerateCredentials(ctx, "in-time", []string{"password2"}, now.Add(-time.Second)); !errors.Is(err, ErrExpiryInvalid) {
		t.Fatalf("GenerateCredentials with a past expiry: %v, want ErrExpiryInvalid", err)
	}
	if _, err := e.a.Login(ctx, "127.0.0.1", "in-time", info.Passwords[1].Value); err != nil {
		t.Fatalf("the password a refused regeneration would have replaced: %v", err)
	}
}

// Changing the admin password (adminPassword, then a restart) ends the
// admin's access and refresh tokens: at once on the restarted replica,
// within a second on another that already checked them.
func TestAdminPasswordChangeRevokesItsTokens(t *testing.T) {
	ctx := context.Background()
	e := newRevocationEnv(t)
	id, err := e.a.Login(ctx, "127.0.0.1", "admin", "the-admin-password")
	if err != nil {
		t.Fatal(err)
	}
	access, _, _, err := e.a.IssueAccess(id, "registry.test", []Access{{Type: "registry", Name: Admin, Actions: []string{"*"}}})
	if err != nil {
		t.Fatal(err)
	}
	refresh, err := e.a.IssueRefresh(id, "registry.test")
	if err != nil {
		t.Fatal(err)
	}
	valid := func(s *Service) error {
		if _, err := s.VerifyAccess(ctx, access, "registry.test"); err != nil {
			return err
		}
		_, err := s.Refresh(ctx, refresh, "registry.test")
		return err
	}
	for _, s := range []*Service{e.a, e.b} {
		if err := valid(s); err != nil {
			t.Fatalf("the admin's tokens before the password changed: %v", err)
		}
	}
	// A restart with another adminPassword stores its hash.
	e.a.opts.AdminPassword = "a-new-admin-password"
	if err := e.a.bootstrapAdmin(ctx); err != nil {
		t.Fatal(err)
	}
	if err := valid(e.a); err == nil {
		t.Fatal("the admin's tokens still work on the replica that changed its password")
	}
	e.advance(revocationCacheTTL + time.Millisecond)
	if err := valid(e.b); err == nil {
		t.Fatalf("the admin's tokens still work on another replica %v after the change", revocationCacheTTL)
	}
	// Tokens from the new password work; the old password does not log in.
	id, err = e.b.Login(ctx, "127.0.0.1", "admin", "a-new-admin-password")
	if err != nil {
		t.Fatal(err)
	}
	access, _, _, _ = e.b.IssueAccess(id, "registry.test", nil)
	if _, err := e.a.VerifyAccess(ctx, access, "registry.test"); err != nil {
		t.Fatalf("an access token of the new admin password: %v", err)
	}
}
