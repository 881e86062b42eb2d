package fusemanager

import (
	"context"
	"errors"
	"time"

	"github.com/sluicehq/sluice/internal/streaming"
)

// startBackground completes a layer in the background once its on-demand
// reads have been quiet for BackgroundDelay, yielding whenever one comes,
// then checks the whole layer's DiffID. A mismatch marks the layer bad
// (markBad).
func (m *Manager) startBackground(lm *mounted) {
	if m.cfg.BackgroundDelay < 0 {
		return
	}
	ctx := lm.ctx
	lm.goWork(func() {
		backoff := time.Second
		for ctx.Err() == nil {
			if !m.waitQuiet(ctx, lm, m.cfg.BackgroundDelay) {
				return
			}
			start := time.Now()
			err := lm.reader.FetchAll(withKind(ctx, background), func(*streaming.Chunk, []byte) error {
				// Yield to on-demand reads between batches.
				if !m.waitQuiet(ctx, lm, 100*time.Millisecond) {
					return ctx.Err()
				}
				// And let the cache write the last batch to disk before
				// the next: a full write queue drops chunks, and a
				// layer complete on a node is one it can read without
				// the registry.
				return m.cache.WaitRoom(ctx, streaming.FetchAllBatchUncompressed)
			})
			switch {
			case err == nil:
				lm.complete.Store(true)
				m.metrics.completed.Inc()
				m.log.Info("layer complete: every chunk fetched and the DiffID verified", "image", lm.ref.ImageRef, "layer", lm.ref.SourceDigest, "duration", time.Since(start))
				return
			case errors.Is(err, streaming.ErrDiffIDMismatch), errors.Is(err, streaming.ErrChunkVerification):
				m.metrics.verifyFailures.Inc()
				m.markBad(lm, err)
				return
			case ctx.Err() != nil:
				return
			default:
				m.log.Warn("background fetch failed; will retry", "layer", lm.ref.SourceDigest, "err", err, "retry_in", backoff)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, time.Minute)
			}
		}
	})
}

// waitQuiet waits until no on-demand read happened for d; false if ctx
// ended first.
func (m *Manager) waitQuiet(ctx context.Context, lm *mounted, d time.Duration) bool {
	for {
		since := time.Since(time.Unix(0, lm.lastDemand.Load()))
		if since >= d {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d - since):
		}
	}
}
