package fusemanager

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/internal/streaming"
)

// TestPrefetchAfterFailedMount: a mount prefetches its layer's startup
// profile while the TOC loads. When the TOC does not load, the mount ends
// (its context canceled) and releases the prefetcher, which then has no
// reader; a batch a worker takes after that must end with the mount, not
// read through the reader that never was (a nil dereference that took the
// FUSE manager down, and every mount of the node with it).
func TestPrefetchAfterFailedMount(t *testing.T) {
	m, err := New(Config{Root: t.TempDir(), Log: slog.New(slog.DiscardHandler), StartupProfiles: true})
	if err != nil {
		t.Fatal(err)
	}
	lm := &mounted{read: make(chan struct{}), opened: make(chan struct{}), profile: newProfile()}
	lm.ctx, lm.stop = context.WithCancel(context.Background())
	pf := &prefetcher{m: m, lm: lm}
	pf.space = sync.NewCond(&pf.mu)

	// What startProfile does when the mount fails: the mount's context
	// ends, then the prefetcher is told the wait for the TOC is over.
	lm.stop()
	pf.opened()
	err = pf.batch(withKind(lm.ctx, prefetch), []streaming.Range{{Offset: 0, Length: 4096}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a batch after the mount failed returned %v, want the mount's context.Canceled", err)
	}
}
