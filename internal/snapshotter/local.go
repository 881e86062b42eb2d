package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sluicehq/sluice/internal/fusemanager"
)

// LabelLocal marks a snapshot that was streamed and, once the node held all
// of it, was unpacked to a local directory in place of its FUSE mount.
const LabelLocal = "containerd.io/snapshot/sluice.local"

// LayerWriter is the side of a LayerMounter that writes a streamed layer
// complete on the node as its original tar (fusemanager.ErrNotComplete
// until it is): the FUSE manager's client.
type LayerWriter interface {
	Layer(ctx context.Context, mountpoint string) (io.ReadCloser, error)
	// Detach takes the FUSE mount off its mountpoint; the containers
	// that hold it keep reading through it until they end.
	Detach(ctx context.Context, mountpoint string) error
	// Statuses says which mounts are complete.
	Statuses(ctx context.Context) ([]fusemanager.Status, error)
}

// UnpackComplete runs until ctx ends: every interval, each streamed layer
// the FUSE manager has completed (every chunk fetched and checked, the
// DiffID verified) is unpacked from the node's chunk cache, with
// containerd's unpack and its DiffID checked again, and takes the place of
// its FUSE mount. Containers created after that read the layer through
// overlayfs from the local disk, as if it had been downloaded; those that
// hold the FUSE mount keep it until they end. The node's disk then holds
// the unpacked layer, as a download would, beside the chunk cache.
func (s *Snapshotter) UnpackComplete(ctx context.Context, interval time.Duration) {
	lw, ok := s.layers.(LayerWriter)
	if !ok {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.unpackComplete(ctx, lw)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// unpackRetry is when a layer whose unpacking failed is tried again: each
// failure doubles the wait, from a minute to an hour, so that a full disk
// does not have the whole layer read from the cache every tick.
type unpackRetry struct {
	at   time.Time
	wait time.Duration
}

const (
	unpackRetryMin = time.Minute
	unpackRetryMax = time.Hour
)

// unpackComplete unpacks each streamed layer that is complete.
func (s *Snapshotter) unpackComplete(ctx context.Context, lw LayerWriter) {
	statuses, err := lw.Statuses(ctx)
	if err != nil {
		s.log.Warn("asking the FUSE manager which layers are complete", "err", err)
		return
	}
	complete := map[string]bool{}
	for _, st := range statuses {
		if st.Complete && st.Bad == "" {
			complete[st.Mountpoint] = true
		}
	}
	if len(complete) == 0 {
		return
	}
	layers, _, err := s.streamedLayers(ctx) // Restore reports unreadable labels
	if err != nil {
		s.log.Warn("listing streamed layers to unpack", "err", err)
		return
	}
	if s.unpackRetries == nil {
		s.unpackRetries = map[string]unpackRetry{}
	}
	for _, l := range layers {
		if ctx.Err() != nil {
			return
		}
		mp := s.fsPath(l.id)
		if !complete[mp] {
			continue
		}
		retry, failed := s.unpackRetries[l.id]
		if failed && time.Now().Before(retry.at) {
			continue
		}
		err := s.replaceStreamed(ctx, l.key, l.id, l.ref, replacement{
			fill: func(ctx context.Context, dir string) error {
				tarStream, err := lw.Layer(ctx, mp)
				if err != nil {
					return fmt.Errorf("read the complete layer from the FUSE manager: %w", err)
				}
				defer tarStream.Close()
				if err := applyLayer(ctx, dir, tarStream, l.ref.DiffID); err != nil {
					return fmt.Errorf("unpack the layer from the node's chunk cache: %w", err)
				}
				return nil
			},
			unmount: lw.Detach,
			label:   LabelLocal, value: "complete",
			done: func(d time.Duration) {
				s.metrics.unpacked.Inc()
				s.log.Info("streamed layer complete: unpacked for the containers created from now on", "image", l.ref.ImageRef, "layer", l.ref.SourceDigest, "duration", d)
			},
		})
		switch {
		case err == nil:
			delete(s.unpackRetries, l.id)
		case errors.Is(err, fusemanager.ErrNotComplete), errors.Is(err, fusemanager.ErrLayerBad), errors.Is(err, fusemanager.ErrNotMounted):
			// Not yet, or for the bad layer's replacement and the
			// restore of mounts to deal with.
		default:
			retry.wait = min(max(2*retry.wait, unpackRetryMin), unpackRetryMax)
			retry.at = time.Now().Add(retry.wait)
			s.unpackRetries[l.id] = retry
			s.log.Warn("unpacking a complete streamed layer failed; containers keep it streamed until a later attempt", "image", l.ref.ImageRef, "layer", l.ref.SourceDigest, "retry in", retry.wait, "err", err)
		}
	}
}
