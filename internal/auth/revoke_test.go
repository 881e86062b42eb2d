package auth

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
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
