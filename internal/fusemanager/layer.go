package fusemanager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/internal/atomicfile"
	"github.com/sluicehq/sluice/internal/layerfs"
	"github.com/sluicehq/sluice/internal/streaming"
)

// LayerRef says where a streamed layer is and how to trust it; the
// snapshotter sends it with a mount request and the manager keeps it in its
// state to restore the mount after a restart.
type LayerRef struct {
	// Registry is host[:port]; PlainHTTP talks HTTP to it.
	Registry   string `json:"registry"`
	PlainHTTP  bool   `json:"plainHTTP,omitempty"`
	Repository string `json:"repository"`
	// Digest and Size of the converted (seekable-zstd) layer.
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// TOC annotations of the converted layer's descriptor.
	TOCDigest digest.Digest `json:"tocDigest"`
	TOCOffset int64         `json:"tocOffset"`
	TOCSize   int64         `json:"tocSize"`
	// SourceDigest is the original layer; DiffID is what the image config
	// says the layer uncompresses to.
	SourceDigest digest.Digest `json:"sourceDigest"`
	DiffID       digest.Digest `json:"diffID,omitempty"`
	// ImageRef names the image, for logs.
	ImageRef string `json:"imageRef,omitempty"`
	// Lowers are the directories of the layers below, top first
	// (layerfs.Options.Lowers).
	Lowers []string `json:"lowers,omitempty"`
}

// Validate checks that a ref is complete.
func (r *LayerRef) Validate() error {
	switch {
	case r.Registry == "" || r.Repository == "":
		return errors.New("layer ref: registry and repository are required")
	case r.Digest.Validate() != nil:
		return fmt.Errorf("layer ref: digest %q is invalid", r.Digest)
	case r.TOCDigest.Validate() != nil || r.TOCSize <= 0 || r.TOCOffset < 0 || r.Size <= r.TOCOffset:
		// (The TOC of an empty layer is at offset 0: no data before it.)
		return errors.New("layer ref: TOC location is invalid")
	}
	return nil
}

// mounted is one layer mounted by the manager.
type mounted struct {
	mountpoint string
	ref        LayerRef
	reader     *streaming.Reader
	fs         *layerfs.Mounted
	mountedAt  time.Time

	// lastDemand is when an on-demand read last started or ended (Unix
	// nanoseconds): background completion yields to it.
	lastDemand atomic.Int64
	firstRead  sync.Once
	// opened is closed once reader is set; read by the first read.
	opened chan struct{}
	// gone is closed when the FUSE connection ends (unmounted, by us or
	// anyone, or aborted); dev is the mount's device number.
	gone chan struct{}
	dev  uint64

	read      chan struct{}
	bad       atomic.Bool
	badReason atomic.Value
	complete  atomic.Bool
	// fetched counts the bytes of the layer fetched from the registry
	// for this mount.
	fetched atomic.Int64
	// readBytes counts the bytes of its files containers read through the
	// mount (what the kernel asked for, its read-ahead included).
	readBytes atomic.Int64
	// profile records this start and holds the registry's profile; nil
	// when profiles are off or the mount was restored.
	profile *profile

	// ctx ends when the layer is unmounted; stop ends it, and workers
	// are the goroutines (background completion, profile work) to wait
	// for then.
	ctx     context.Context
	stop    context.CancelFunc
	workers sync.WaitGroup
}

// goWork runs f as one of the mount's workers.
func (m *mounted) goWork(f func()) {
	m.workers.Add(1)
	go func() {
		defer m.workers.Done()
		f()
	}()
}

// served says why the layer is not served at its mountpoint, or nil: its
// FUSE connection ended, or the mountpoint no longer holds it (unmounted
// behind the manager's back). It sends no FUSE request (a statfs through
// the mount did, and queued behind chunk verification just when containers
// were being created); so it does not prove that the manager answers
// requests, only that the mount is there and connected.
func (m *mounted) served() error {
	select {
	case <-m.gone:
		return fmt.Errorf("layer at %s is no longer served: its FUSE connection ended", m.mountpoint)
	default:
	}
	dev, err := mountDevice(m.mountpoint)
	if err != nil {
		return fmt.Errorf("layer at %s: %w", m.mountpoint, err)
	}
	if dev != m.dev {
		return fmt.Errorf("layer at %s is no longer mounted there", m.mountpoint)
	}
	return nil
}

// mountDevice returns the device number of the file system at path. With
// AT_STATX_DONT_SYNC a FUSE mount answers from what the kernel holds,
// without a request to its server; the device comes from the superblock
// anyway.
func mountDevice(path string) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE, &stx); err != nil {
		return 0, err
	}
	return unix.Mkdev(stx.Dev_major, stx.Dev_minor), nil
}

// shutdown stops the mount's workers and waits for them.
func (m *mounted) shutdown() {
	m.stop()
	m.workers.Wait()
}

// source adapts a mounted layer for layerfs: it marks on-demand activity and
// refuses reads once the layer is known bad.
type source struct {
	m       *mounted
	manager *Manager
}

func (s *source) Entries() []streaming.Entry { return s.m.reader.Entries() }

func (s *source) ImplicitDirs() []streaming.ImplicitDir { return s.m.reader.ImplicitDirs() }

func (s *source) DataEntry(e *streaming.Entry) *streaming.Entry { return s.m.reader.DataEntry(e) }

func (s *source) ReadAt(ctx context.Context, e *streaming.Entry, p []byte, off int64) (int, error) {
	m := s.m
	if m.bad.Load() {
		return 0, fmt.Errorf("%w: %s: %v", ErrLayerBad, m.ref.Digest, m.badReason.Load())
	}
	m.firstRead.Do(func() {
		d := time.Since(m.mountedAt)
		s.manager.metrics.firstRead.Observe(d.Seconds())
		s.manager.log.Info("first read of a streamed layer", "image", m.ref.ImageRef, "layer", m.ref.SourceDigest, "after", d)
		close(m.read)
	})
	m.lastDemand.Store(time.Now().UnixNano())
	if m.profile != nil && m.profile.recording() {
		m.profile.note(m.reader.ChunksOf(e, off, len(p)))
	}
	n, err := m.reader.ReadAt(withKind(ctx, onDemand), e, p, off)
	m.lastDemand.Store(time.Now().UnixNano())
	m.readBytes.Add(int64(n))
	if errors.Is(err, streaming.ErrChunkVerification) {
		s.manager.metrics.verifyFailures.Inc()
		s.manager.log.Error("chunk failed verification: answering EIO", "image", m.ref.ImageRef, "layer", m.ref.Digest, "file", e.Name, "err", err)
		s.manager.markBad(m, err)
	}
	return n, err
}

// fetchKind tells the range reader whose bytes it fetches, for metrics.
type fetchKind int

const (
	onDemand fetchKind = iota
	background
	prefetch
)

type kindKey struct{}

func withKind(ctx context.Context, k fetchKind) context.Context {
	return context.WithValue(ctx, kindKey{}, k)
}

func kindOf(ctx context.Context) fetchKind {
	k, _ := ctx.Value(kindKey{}).(fetchKind)
	return k
}

// countingRanges counts the bytes a reader fetches: by kind in the
// metrics, and in all in its layer's count.
type countingRanges struct {
	inner   streaming.MultiRangeReader
	metrics *metrics
	layer   *atomic.Int64
}

func (c *countingRanges) count(ctx context.Context, n int64) {
	c.metrics.fetched(kindOf(ctx), n)
	c.layer.Add(n)
}

func (c *countingRanges) ReadRange(ctx context.Context, p []byte, off int64) error {
	err := c.inner.ReadRange(ctx, p, off)
	if err == nil {
		c.count(ctx, int64(len(p)))
	}
	return err
}

func (c *countingRanges) ReadRanges(ctx context.Context, ranges []streaming.Range, bufs [][]byte) error {
	err := c.inner.ReadRanges(ctx, ranges, bufs)
	if err == nil {
		var n int64
		for _, r := range ranges {
			n += r.Length
		}
		c.count(ctx, n)
	}
	return err
}

// tailStore keeps the end of each converted blob (TOC frame and footer) on
// local disk, so that a layer can be mounted again after a restart or a
// reboot without the registry.
type tailStore struct {
	dir string
}

func (t *tailStore) path(toc digest.Digest) string { return filepath.Join(t.dir, toc.Encoded()) }

// wrap returns a range reader that answers the tail from disk when it has
// it, and keeps it when it fetches it.
func (t *tailStore) wrap(ref LayerRef, remote streaming.MultiRangeReader) *tailReader {
	return &tailReader{store: t, ref: ref, MultiRangeReader: remote}
}

type tailReader struct {
	streaming.MultiRangeReader
	store *tailStore
	ref   LayerRef
	// fetched is the tail as fetched from the registry, for the caller to
	// keep once the reader verified it (nil when it came from disk).
	fetched []byte
}

func (r *tailReader) ReadRange(ctx context.Context, p []byte, off int64) error {
	if off != r.ref.TOCOffset || int64(len(p)) != r.ref.Size-r.ref.TOCOffset {
		return r.MultiRangeReader.ReadRange(ctx, p, off)
	}
	path := r.store.path(r.ref.TOCDigest)
	if b, err := os.ReadFile(path); err == nil && len(b) == len(p) {
		copy(p, b)
		return nil
	}
	if err := r.MultiRangeReader.ReadRange(ctx, p, off); err != nil {
		return err
	}
	r.fetched = p
	return nil
}

// keep writes a verified tail to the store.
func (t *tailStore) keep(ref LayerRef, tail []byte) error {
	if err := os.MkdirAll(t.dir, 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(t.path(ref.TOCDigest), tail, 0o600)
}
