package fusemanager

import (
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/streaming"
)

// ErrLayerBad is returned for a streamed layer whose content was found not
// to be what its image promises: a chunk that failed its digest, or a whole
// layer whose DiffID is not the image config's. The snapshotter answers by
// downloading the original layer in its place.
var ErrLayerBad = errors.New("streamed layer is bad")

// A streamed layer whose TOC the manager refuses to load is not mounted:
// the snapshotter downloads the original layer instead, with the reason.
var (
	// ErrBadArtifact: the TOC does not match its digest, does not parse,
	// or does not describe its blob (chunks overlapping or outside it,
	// sizes that disagree, a footer that disagrees with the annotations),
	// or its DiffID is not the image config's.
	ErrBadArtifact = errors.New("streamed layer refused")
	// ErrOverLimit: the TOC is over one of the node's limits.
	ErrOverLimit = errors.New("streamed layer over the node's limits")
)

// Refusal is a mount refused for what the streamed layer is: Kind is
// ErrBadArtifact or ErrOverLimit, Err says why.
type Refusal struct {
	Kind error
	Err  error
}

func (r *Refusal) Error() string { return r.Err.Error() }

// Unwrap gives both the kind and the cause.
func (r *Refusal) Unwrap() []error { return []error{r.Kind, r.Err} }

// refusedArtifact reports whether opening a layer failed for what the
// registry served rather than for reaching it.
func refusedArtifact(err error) bool {
	for _, e := range []error{streaming.ErrTOCVerification, streaming.ErrInvalidFormat, streaming.ErrDiffIDMismatch, streaming.ErrUnsupportedVersion} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// markBad acts on a failed verification of a mounted layer, once: every
// later read fails (EIO), the kernel's cached pages of the layer are
// dropped so that nothing read before the verdict is served again, this
// node never mounts the same streamed layer again, and the event is
// counted and logged at ERROR with the image and the layer.
func (m *Manager) markBad(lm *mounted, cause error) {
	lm.badReason.Store(cause.Error())
	if !lm.bad.CompareAndSwap(false, true) {
		return
	}
	m.metrics.bad.Inc()
	m.log.Error("STREAMED LAYER IS BAD: its content does not match what the image promises; reads now fail and the snapshotter downloads the layer for the next container",
		"image", lm.ref.ImageRef, "layer", lm.ref.SourceDigest, "streamed", lm.ref.Digest, "mountpoint", lm.mountpoint, "err", cause)
	m.rememberBad(lm.ref.Digest, cause)
	// The kernel drops the pages only once the reads holding them end,
	// and the verdict may come from inside a read of this very mount:
	// the invalidation runs on its own.
	go func() {
		start := time.Now()
		n := lm.fs.Invalidate()
		m.log.Info("dropped the kernel's cached pages of a bad layer", "layer", lm.ref.SourceDigest, "files", n, "duration", time.Since(start))
	}()
	if err := m.saveState(); err != nil {
		m.log.Warn("save state", "err", err)
	}
}

// rememberBad keeps a bad streamed layer's digest, so that it is refused
// if asked to be mounted again (by another image sharing it, after a
// restart).
func (m *Manager) rememberBad(d digest.Digest, cause error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bad[d] = cause.Error()
}

// checkNotBad refuses a streamed layer this node found bad before.
func (m *Manager) checkNotBad(ref LayerRef) error {
	m.mu.Lock()
	reason, bad := m.bad[ref.Digest]
	m.mu.Unlock()
	if bad {
		return fmt.Errorf("%w: %s was found bad on this node before (%s)", ErrLayerBad, ref.Digest, reason)
	}
	return nil
}
