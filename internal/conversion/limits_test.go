package conversion

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/streaming"
)

// TestLayerOverALimit: a layer over one of the streaming limits fails its
// conversion at once, with IMAGE_NOT_RUNNABLE and a message naming the
// layer, the value and the limit's configuration key.
func TestLayerOverALimit(t *testing.T) {
	e := &env{t: t, dir: t.TempDir(), tweak: func(o *Options) {
		o.Streaming.Limits = streaming.Limits{MaxEntries: 1500, MaxNameBytes: 20}
	}}
	e.open(true)
	t.Cleanup(e.close)
	ctx := context.Background()
	tests := []struct {
		name  string
		layer layer
		want  string
	}{
		{"entries", makeLayer(t, 31, 2000, 10), "has more than 1,500 entries (limit streaming.limits.maxEntries)"},
		// makeLayer names its files dir<seed>/file<i>.
		{"name bytes", makeLayer(t, 1234567890123456789, 3, 10), "has an entry whose name has a 22-byte element, more than 20 (\"dir1234567890123456789/file0\") (limit streaming.limits.maxNameBytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := e.pushImage("limits", tt.name, "linux", "amd64", tt.layer)
			op, err := e.conv.Start(ctx, "limits", img.Digest, "admin")
			if err != nil {
				t.Fatal(err)
			}
			got := e.wait("limits", op.ID)
			want := fmt.Sprintf("layer %s %s", digestOf(tt.layer), tt.want)
			if got.Status != metadata.StatusFailed || got.ErrorCode != CodeImageNotRunnable || got.ErrorMessage != want {
				t.Fatalf("got %s %s %q, want Failed %s %q", got.Status, got.ErrorCode, got.ErrorMessage, CodeImageNotRunnable, want)
			}
			if got.Attempts != 1 {
				t.Errorf("a layer over a limit was tried %d times", got.Attempts)
			}
		})
	}
}

func digestOf(l layer) string { return digest.FromBytes(l.blob).String() }

// TestMemoryBudgetBoundsConcurrentConversions: with two workers and a
// budget that holds one conversion, two conversions never read their
// layers at the same time; with a budget for two, they do.
func TestMemoryBudgetBoundsConcurrentConversions(t *testing.T) {
	for _, tt := range []struct {
		name       string
		budget     int64
		wantActive int64
	}{
		{"budget for one", streaming.DefaultMemoryBudget, 1},
		{"budget for two", 2 * streaming.DefaultMemoryBudget, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := &env{t: t, dir: t.TempDir(), tweak: func(o *Options) { o.Workers, o.MemoryBudget = 2, tt.budget }}
			e.open(false)
			t.Cleanup(e.close)
			var active, most atomic.Int64
			e.conv.sourceHook = func(r io.Reader) io.Reader { return &overlapReader{r: r, active: &active, most: &most} }
			ctx := context.Background()
			var ids []string
			for i := range 2 {
				img := e.pushImage("budget", fmt.Sprint("v", i), "linux", "amd64", makeLayer(t, uint64(40+i), 3, 1000))
				op, err := e.conv.Start(ctx, "budget", img.Digest, "admin")
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, op.ID)
			}
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { e.conv.Run(runCtx); close(done) }()
			defer func() { cancel(); <-done }()
			for _, id := range ids {
				if got := e.wait("budget", id); got.Status != metadata.StatusSucceeded {
					t.Fatalf("operation %s: %s %s", id, got.Status, got.ErrorMessage)
				}
			}
			if most.Load() != tt.wantActive {
				t.Fatalf("%d conversions read their layers at once, want %d", most.Load(), tt.wantActive)
			}
		})
	}
}

// overlapReader counts the conversions reading at once; its first read
// waits (up to a second) for another to start, so that two conversions
// allowed to overlap do.
type overlapReader struct {
	r            io.Reader
	active, most *atomic.Int64
	started      bool
}

func (o *overlapReader) Read(p []byte) (int, error) {
	if !o.started {
		o.started = true
		n := o.active.Add(1)
		for deadline := time.Now().Add(time.Second); n < 2 && time.Now().Before(deadline); n = o.active.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		for m := o.most.Load(); n > m && !o.most.CompareAndSwap(m, n); m = o.most.Load() {
		}
	}
	n, err := o.r.Read(p)
	if err != nil {
		o.active.Add(-1)
	}
	return n, err
}
