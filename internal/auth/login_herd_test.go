package auth

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/internal/metadata"
)

// countingStore counts the reads of the admin's password hash: one per
// password check.
type countingStore struct {
	*metadata.Store
	hashReads atomic.Int64
}

func (c *countingStore) GetUserHash(ctx context.Context, name string) (string, error) {
	c.hashReads.Add(1)
	return c.Store.GetUserHash(ctx, name)
}

// Many clients logging in at once with the same credentials (nodes
// starting the same image with one pull token) share one password check
// instead of each paying bcrypt; a canceled caller does not fail it for
// the others, and a wrong password is still refused to each.
func TestConcurrentLoginsShareOneCheck(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	meta, err := metadata.OpenSQLite(ctx, filepath.Join(dir, "sluice.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	store := &countingStore{Store: meta}
	s, err := NewService(ctx, store, Options{AdminPassword: "the-admin-password", KeyDir: filepath.Join(dir, "keys"), FailedLoginBurst: 100}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	store.hashReads.Store(0)
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	const clients = 50
	var wg sync.WaitGroup
	var failures atomic.Int64
	start := make(chan struct{})
	for i := range clients {
		wg.Go(func() {
			<-start
			c := ctx
			if i == 0 {
				c = canceled
			}
			if _, err := s.Login(c, "10.0.0.1", "admin", "the-admin-password"); err != nil {
				failures.Add(1)
				t.Errorf("login %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := store.hashReads.Load(); n > 3 {
		t.Fatalf("%d concurrent logins with the same credentials checked the password %d times", clients, n)
	}
	for range 3 {
		if _, err := s.Login(ctx, "10.0.0.2", "admin", "wrong"); err == nil {
			t.Fatal("a wrong password was accepted")
		}
	}
}
