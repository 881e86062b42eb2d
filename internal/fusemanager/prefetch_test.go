package fusemanager

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// gatedRanges serves ranges of blob once its gate opens, counting requests.
type gatedRanges struct {
	blob     []byte
	gate     chan struct{}
	started  chan struct{}
	once     sync.Once
	requests atomic.Int64
}

func (g *gatedRanges) ReadRange(ctx context.Context, p []byte, off int64) error {
	return g.ReadRanges(ctx, []streaming.Range{{Offset: off, Length: int64(len(p))}}, [][]byte{p})
}

func (g *gatedRanges) ReadRanges(ctx context.Context, ranges []streaming.Range, bufs [][]byte) error {
	g.requests.Add(1)
	if g.started != nil {
		g.once.Do(func() { close(g.started) })
	}
	if g.gate != nil {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i, r := range ranges {
		copy(bufs[i], g.blob[r.Offset:r.Offset+r.Length])
	}
	return nil
}

// TestReadsWaitForRawFetchUnderWay: on a slow link the profile's first
// batch, fetched raw while the TOC loads, is still coming when the
// container's first reads arrive; they must wait for it, not fetch the
// same chunks again.
func TestReadsWaitForRawFetchUnderWay(t *testing.T) {
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	body := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	for _, name := range []string{"a", "b"} {
		_ = tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
		_, _ = tw.Write(body)
	}
	_ = tw.Close()
	var blob bytes.Buffer
	if _, err := streaming.Convert(context.Background(), &tarball, &blob, streaming.Options{ChunkSize: 256 << 10, FileChunkSize: 256 << 10}); err != nil {
		t.Fatal(err)
	}
	own := &gatedRanges{blob: blob.Bytes()}
	reader, err := streaming.Open(context.Background(), own, int64(blob.Len()), streaming.WithChunkCache(streaming.NewMemoryCache(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	own.requests.Store(0)
	chunks := reader.TOC().Chunks
	if len(chunks) < 4 {
		t.Fatalf("%d chunks", len(chunks))
	}

	m, err := New(Config{Root: t.TempDir(), Log: slog.New(slog.DiscardHandler), StartupProfiles: true})
	if err != nil {
		t.Fatal(err)
	}
	lm := &mounted{read: make(chan struct{}), opened: make(chan struct{}), profile: newProfile()}
	lm.ctx, lm.stop = context.WithCancel(context.Background())
	defer lm.stop()
	slow := &gatedRanges{blob: blob.Bytes(), gate: make(chan struct{}), started: make(chan struct{})}
	pf := &prefetcher{m: m, lm: lm, remote: slow, verify: make(chan claimedBatch, 4), fetching: map[*rawFetch]struct{}{}}
	pf.space = sync.NewCond(&pf.mu)
	go func() {
		for cb := range pf.verify {
			_ = pf.supplyClaimed(lm.ctx, cb)
		}
	}()
	defer close(pf.verify)

	var batch []streaming.Range
	for _, c := range chunks[:3] {
		batch = append(batch, streaming.Range{Offset: c.Offset, Length: c.Size})
	}
	done := make(chan error, 1)
	go func() { done <- pf.batch(lm.ctx, batch) }()
	<-slow.started // the raw fetch is under way

	// The TOC loads: the mount opens.
	lm.reader = reader
	close(lm.opened)
	pf.opened()

	a, err := reader.Lookup("a")
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		p := make([]byte, 100)
		_, err := reader.ReadAt(context.Background(), a, p, 10)
		if err == nil && !bytes.Equal(p, body[10:110]) {
			err = errors.New("wrong bytes")
		}
		read <- err
	}()
	select {
	case err := <-read:
		t.Fatalf("the read did not wait for the fetch under way: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(slow.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	if n := own.requests.Load(); n != 0 {
		t.Fatalf("the read made %d requests of its own", n)
	}
}
