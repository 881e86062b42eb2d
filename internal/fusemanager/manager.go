// Package fusemanager is the long-lived process that owns the node's
// streamed-layer FUSE mounts: it mounts a layer when the snapshotter asks,
// serves its reads (chunks fetched with HTTP range requests, verified, kept
// in the shared on-disk chunk cache), completes it in the background and
// checks its DiffID, and keeps its state on disk so that mounts come back
// after a reboot without the registry.
//
// It runs apart from the snapshotter so that killing or restarting the
// snapshotter never breaks a running container: the FUSE connections
// belong to this process, which the snapshotter finds again on its socket.
package fusemanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/sluicehq/sluice/internal/atomicfile"
	"github.com/sluicehq/sluice/internal/chunkcache"
	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/keyedmutex"
	"github.com/sluicehq/sluice/internal/layerfs"
	"github.com/sluicehq/sluice/internal/streaming"
)

// Config configures a manager.
type Config struct {
	// Root holds the state file, the layers' TOCs and the chunk cache.
	Root string
	// CacheMaxBytes bounds the chunk cache.
	CacheMaxBytes int64
	// CacheMemoryBytes is how much of it is also kept in memory (0: the
	// chunk cache's default).
	CacheMemoryBytes int64
	// Credential returns registry credentials (docker config, node token).
	Credential auth.CredentialFunc
	// BackgroundDelay is how long a layer's reads must be quiet before
	// background completion starts; negative turns it off.
	BackgroundDelay time.Duration
	// OverlayXattr is overlayfs's xattr prefix for opaque directories.
	OverlayXattr string
	// StartupProfiles prefetches, when a layer is mounted, the chunks the
	// registry's startup profile of it lists, and gives the registry the
	// profile of this start when it had none (or a poor one).
	StartupProfiles bool
	// Limits bound the TOCs the manager loads (zero fields: the streaming
	// package's defaults).
	Limits streaming.Limits
	Log    *slog.Logger
}

// Manager owns the mounts.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	cache   *chunkcache.Cache
	tails   *tailStore
	metrics *metrics

	mu     sync.Mutex
	mounts map[string]*mounted
	// retiring are mounts off their mountpoints (detached, or replaced
	// by a new mount) still served for the containers that hold them.
	retiring map[*mounted]struct{}
	// bad holds the streamed layers found bad, with why: never mounted
	// again.
	bad map[digest.Digest]string
	// mountpoints serialises mounting and unmounting at one mountpoint.
	mountpoints keyedmutex.Mutex
	clients     map[string]*client.Client
	stateMu     sync.Mutex // serialises saveState
	// stopping refuses new mounts while Stop runs; stopped is closed when
	// Stop has unmounted everything, and ends Serve.
	stopping bool
	stopped  chan struct{}
}

// New opens the manager's stores. Call Restore to bring back the mounts of
// an earlier run.
func New(cfg Config) (*Manager, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.CacheMaxBytes <= 0 {
		cfg.CacheMaxBytes = 10 << 30
	}
	if cfg.BackgroundDelay == 0 {
		cfg.BackgroundDelay = 2 * time.Second
	}
	if err := os.MkdirAll(cfg.Root, 0o700); err != nil {
		return nil, err
	}
	cache, err := chunkcache.OpenWith(filepath.Join(cfg.Root, "chunks"), cfg.CacheMaxBytes, chunkcache.Options{MemoryBytes: cfg.CacheMemoryBytes})
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, log: cfg.Log, cache: cache, tails: &tailStore{dir: filepath.Join(cfg.Root, "tocs")},
		mounts: map[string]*mounted{}, retiring: map[*mounted]struct{}{}, bad: map[digest.Digest]string{}, clients: map[string]*client.Client{}, stopped: make(chan struct{})}
	m.metrics = newMetrics(m)
	return m, nil
}

func (m *Manager) client(ref LayerRef) *client.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := fmt.Sprintf("%s|%v", ref.Registry, ref.PlainHTTP)
	c := m.clients[key]
	if c == nil {
		c = client.New(ref.Registry, client.Options{PlainHTTP: ref.PlainHTTP, Credential: m.cfg.Credential, UserAgent: "sluice-snapshotter"})
		m.clients[key] = c
	}
	return c
}

// ErrNotMounted is returned for a mountpoint the manager does not serve.
var ErrNotMounted = errors.New("not mounted by the FUSE manager")

// Mount mounts a layer at mountpoint. Mounting what is already mounted
// there is a no-op, so the snapshotter can ask again after a restart.
// With startup profiles on, the layer's profile is prefetched and this
// start recorded.
func (m *Manager) Mount(ctx context.Context, mountpoint string, ref LayerRef) error {
	return m.mount(ctx, mountpoint, ref, m.cfg.StartupProfiles)
}

// mount mounts a layer; profiles says whether to prefetch its startup
// profile and record this start (not for a mount restored under running
// containers).
func (m *Manager) mount(ctx context.Context, mountpoint string, ref LayerRef, profiles bool) error {
	if err := ref.Validate(); err != nil {
		return err
	}
	if err := m.checkNotBad(ref); err != nil {
		return err
	}
	// Requests for one mountpoint wait for each other: containers being
	// created from one image all ask for its layers at once.
	unlock := m.mountpoints.Lock(mountpoint)
	defer unlock()
	m.mu.Lock()
	cur, ok := m.mounts[mountpoint]
	stopping := m.stopping
	m.mu.Unlock()
	if stopping {
		return ErrStopping
	}
	if ok {
		err := cur.served()
		if err == nil {
			if cur.ref.Digest == ref.Digest {
				return nil
			}
			return fmt.Errorf("%s already holds layer %s", mountpoint, cur.ref.Digest)
		}
		// Unmounted by something else than us, or its connection
		// ended: mount the layer again. A connection that ended leaves
		// its dead mount at the mountpoint; it goes first.
		select {
		case <-cur.gone:
			_ = syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		default:
		}
		m.mu.Lock()
		delete(m.mounts, mountpoint)
		m.mu.Unlock()
		m.retire(cur)
		m.log.Warn("a layer is no longer mounted where the manager mounted it; mounting it again", "mountpoint", mountpoint, "layer", cur.ref.SourceDigest, "reason", err)
	}

	start := time.Now()
	lm := &mounted{mountpoint: mountpoint, ref: ref, read: make(chan struct{}), opened: make(chan struct{}), gone: make(chan struct{})}
	lm.ctx, lm.stop = context.WithCancel(context.Background())
	if profiles {
		// The profile is asked for, and its first chunks fetched, while
		// the TOC loads: that costs the mount nothing.
		lm.profile = newProfile()
		m.startProfile(lm, m.fetchProfile(ref))
	}
	reader, tail, err := m.open(ctx, ref, &lm.fetched)
	if err != nil {
		lm.shutdown()
		return err
	}
	opened := time.Since(start)
	lm.reader, lm.mountedAt = reader, time.Now()
	close(lm.opened)
	// Background completion waits for the layer to be quiet, counting
	// from the mount: a container about to start reads first.
	lm.lastDemand.Store(lm.mountedAt.UnixNano())
	mnt, err := layerfs.Mount(mountpoint, &source{m: lm, manager: m}, layerfs.Options{OverlayXattr: m.cfg.OverlayXattr, Lowers: ref.Lowers})
	if err != nil {
		lm.shutdown()
		reader.Close()
		return err
	}
	lm.fs = mnt
	go func() {
		mnt.Wait()
		close(lm.gone)
		lm.stop() // no background work for a layer nobody can read
	}()
	// The mount's device number, to tell later whether the mountpoint
	// still holds it.
	if lm.dev, err = mountDevice(mountpoint); err != nil {
		lm.shutdown()
		if mnt.Unmount() != nil {
			_ = syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		}
		<-lm.gone
		reader.Close()
		return fmt.Errorf("mounted layer at %s: %w", mountpoint, err)
	}
	m.mu.Lock()
	m.mounts[mountpoint] = lm
	m.mu.Unlock()
	// The local copy of the TOC and the state that lists the mount are
	// written after the mount answers: until they are, a crash of the
	// manager loses only the restore of this mount without the registry
	// (the snapshotter asks for it again).
	lm.goWork(func() {
		if tail != nil {
			if err := m.tails.keep(ref, tail); err != nil {
				m.log.Warn("keep the layer's TOC on disk", "layer", ref.Digest, "err", err)
			}
		}
		if err := m.saveState(); err != nil {
			m.log.Warn("save state", "err", err)
		}
	})
	m.startBackground(lm)
	m.log.Info("layer mounted", "mountpoint", mountpoint, "image", ref.ImageRef, "layer", ref.SourceDigest, "streamed", ref.Digest,
		"files", len(reader.Entries()), "tocTime", opened.Round(time.Millisecond), "mountTime", time.Since(start).Round(time.Millisecond))
	return nil
}

// open loads and verifies a layer's TOC, from the local tail store when it
// has it. A damaged local copy is dropped and fetched again. A tail
// fetched from the registry is returned for the caller to keep (off the
// mount's critical path). What the reader fetches is added to fetched.
func (m *Manager) open(ctx context.Context, ref LayerRef, fetched *atomic.Int64) (*streaming.Reader, []byte, error) {
	remote := m.remote(ref, fetched)
	opts := []streaming.ReaderOption{
		streaming.WithTOC(ref.TOCDigest, ref.TOCOffset, ref.TOCSize),
		streaming.WithChunkCache(m.cache),
		streaming.WithLimits(m.cfg.Limits),
	}
	if ref.DiffID != "" {
		opts = append(opts, streaming.WithDiffID(ref.DiffID))
	}
	tr := m.tails.wrap(ref, remote)
	r, err := streaming.Open(ctx, tr, ref.Size, opts...)
	if errors.Is(err, streaming.ErrTOCVerification) || errors.Is(err, streaming.ErrInvalidFormat) {
		_ = os.Remove(m.tails.path(ref.TOCDigest))
		tr = m.tails.wrap(ref, remote)
		r, err = streaming.Open(ctx, tr, ref.Size, opts...)
	}
	if err != nil {
		if errors.Is(err, streaming.ErrTOCVerification) || errors.Is(err, streaming.ErrDiffIDMismatch) {
			m.metrics.verifyFailures.Inc()
		}
		err = fmt.Errorf("open streamed layer %s: %w", ref.Digest, err)
		switch {
		case errors.Is(err, streaming.ErrLimitExceeded):
			err = &Refusal{Kind: ErrOverLimit, Err: err}
		case refusedArtifact(err):
			err = &Refusal{Kind: ErrBadArtifact, Err: err}
		default:
			return nil, nil, err
		}
		m.log.Warn("streamed layer refused: its TOC is not loaded", "image", ref.ImageRef, "layer", ref.SourceDigest, "streamed", ref.Digest, "err", err)
		return nil, nil, err
	}
	return r, tr.fetched, nil
}

// remote reads ranges of a streamed layer from its registry, counting the
// bytes in the metrics and in the mount's own count, fetched.
func (m *Manager) remote(ref LayerRef, fetched *atomic.Int64) *countingRanges {
	return &countingRanges{inner: m.client(ref).BlobRanges(ref.Repository, ref.Digest, ref.Size), metrics: m.metrics, layer: fetched}
}

// take removes a mountpoint's mount from those the manager serves, and
// returns it.
func (m *Manager) take(mountpoint string) (*mounted, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	lm, ok := m.mounts[mountpoint]
	if ok {
		delete(m.mounts, mountpoint)
	}
	return lm, ok
}

// Unmount unmounts a layer and drops its chunks from the cache unless
// another mounted layer shares them.
func (m *Manager) Unmount(ctx context.Context, mountpoint string) error {
	unlock := m.mountpoints.Lock(mountpoint)
	defer unlock()
	lm, ok := m.take(mountpoint)
	if !ok {
		// Not ours (or already gone): make sure nothing stays mounted.
		_ = syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		return nil
	}
	lm.shutdown()
	if err := lm.fs.Unmount(); err != nil {
		if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			m.log.Warn("unmount layer", "mountpoint", mountpoint, "err", err)
		}
	}
	lm.reader.Close()
	m.dropChunks(lm)
	if err := m.saveState(); err != nil {
		m.log.Warn("save state", "err", err)
	}
	m.log.Info("layer unmounted", "mountpoint", mountpoint, "layer", lm.ref.SourceDigest)
	return nil
}

// Detach takes a mount off its mountpoint, which is then free for a local
// copy of the layer, and keeps serving the containers that hold it until
// the last of them lets go (retire); its chunks stay in the cache, whose
// eviction bounds them. A mountpoint the manager does not serve is only
// unmounted.
func (m *Manager) Detach(ctx context.Context, mountpoint string) error {
	unlock := m.mountpoints.Lock(mountpoint)
	defer unlock()
	lm, ok := m.take(mountpoint)
	if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		if ok {
			m.mu.Lock()
			m.mounts[mountpoint] = lm
			m.mu.Unlock()
		}
		return fmt.Errorf("detach %s: %w", mountpoint, err)
	}
	if !ok {
		return nil
	}
	m.retire(lm)
	if err := m.saveState(); err != nil {
		m.log.Warn("save state", "err", err)
	}
	m.log.Info("layer detached; it is served until its last user lets go", "mountpoint", mountpoint, "layer", lm.ref.SourceDigest)
	return nil
}

// dropChunks removes a gone layer's chunks that no mounted layer uses.
func (m *Manager) dropChunks(gone *mounted) {
	m.mu.Lock()
	inUse := map[digest.Digest]bool{}
	for _, other := range m.mounts {
		for _, c := range other.reader.TOC().Chunks {
			inUse[c.Digest] = true
		}
	}
	m.mu.Unlock()
	var drop []digest.Digest
	for _, c := range gone.reader.TOC().Chunks {
		if !inUse[c.Digest] {
			drop = append(drop, c.Digest)
		}
	}
	m.cache.Remove(drop)
}

// Check reports whether a mount is served and healthy.
func (m *Manager) Check(mountpoint string) error {
	m.mu.Lock()
	lm, ok := m.mounts[mountpoint]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("%s: %w", mountpoint, ErrNotMounted)
	}
	if lm.bad.Load() {
		return fmt.Errorf("%w: %s at %s: %v", ErrLayerBad, lm.ref.Digest, mountpoint, lm.badReason.Load())
	}
	return lm.served()
}

// Fetched returns the bytes the layer mounted at mountpoint has fetched
// from its registry since it was mounted (by this manager: a mount
// restored after a restart counts from 0, its TOC read from disk).
func (m *Manager) Fetched(mountpoint string) (int64, error) {
	m.mu.Lock()
	lm, ok := m.mounts[mountpoint]
	m.mu.Unlock()
	if !ok {
		return 0, fmt.Errorf("%s: %w", mountpoint, ErrNotMounted)
	}
	return lm.fetched.Load(), nil
}

// ErrNotComplete answers a request for the whole of a layer not yet
// fetched and verified.
var ErrNotComplete = errors.New("streamed layer is not complete yet")

// completeMount returns the mount at mountpoint if its layer is complete
// on the node, or why it is not.
func (m *Manager) completeMount(mountpoint string) (*mounted, error) {
	m.mu.Lock()
	lm, ok := m.mounts[mountpoint]
	m.mu.Unlock()
	switch {
	case !ok:
		return nil, fmt.Errorf("%s: %w", mountpoint, ErrNotMounted)
	case lm.bad.Load():
		return nil, fmt.Errorf("%w: %s: %v", ErrLayerBad, lm.ref.Digest, lm.badReason.Load())
	case !lm.complete.Load():
		return nil, fmt.Errorf("%s: %w", mountpoint, ErrNotComplete)
	}
	return lm, nil
}

// retire lets go of a mount that is no longer at its mountpoint once its
// FUSE connection ends: containers that still hold it keep it until then.
// Its chunks stay in the cache: the layer is being mounted again, and the
// cache's eviction bounds what it holds.
func (m *Manager) retire(lm *mounted) {
	m.mu.Lock()
	m.retiring[lm] = struct{}{}
	m.mu.Unlock()
	go func() {
		<-lm.gone
		lm.shutdown()
		lm.reader.Close()
		m.mu.Lock()
		delete(m.retiring, lm)
		m.mu.Unlock()
	}()
}

// Status describes a mount, for the status endpoint.
type Status struct {
	Mountpoint string   `json:"mountpoint"`
	Layer      LayerRef `json:"layer"`
	MountedAt  string   `json:"mountedAt"`
	Complete   bool     `json:"complete"`
	Bad        string   `json:"bad,omitempty"`
	// Fetched is the bytes of the layer this mount fetched from the
	// registry (TOC, prefetch, on demand, background).
	Fetched int64 `json:"fetchedBytes"`
	// Read is the bytes of its files containers read through the mount,
	// the kernel's read-ahead included: what an ideal fetch would bring.
	Read int64 `json:"readBytes"`
}

// Statuses lists the mounts.
func (m *Manager) Statuses() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.mounts))
	for _, lm := range m.mounts {
		s := Status{Mountpoint: lm.mountpoint, Layer: lm.ref, MountedAt: lm.mountedAt.UTC().Format(time.RFC3339), Complete: lm.complete.Load(),
			Fetched: lm.fetched.Load(), Read: lm.readBytes.Load()}
		if lm.bad.Load() {
			s.Bad = fmt.Sprint(lm.badReason.Load())
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Mountpoint < out[j].Mountpoint })
	return out
}

// state is what the manager keeps on disk to restore its mounts.
type state struct {
	Mounts []stateMount `json:"mounts"`
	// Bad are the streamed layers found bad, with why.
	Bad map[digest.Digest]string `json:"bad,omitempty"`
}

type stateMount struct {
	Mountpoint string   `json:"mountpoint"`
	Layer      LayerRef `json:"layer"`
}

func (m *Manager) statePath() string { return filepath.Join(m.cfg.Root, "state.json") }

func (m *Manager) saveState() error {
	// One writer at a time, each writing the mounts as they are when it
	// writes: the last write is never an older view.
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	m.mu.Lock()
	var st state
	for mp, lm := range m.mounts {
		st.Mounts = append(st.Mounts, stateMount{Mountpoint: mp, Layer: lm.ref})
	}
	if len(m.bad) > 0 {
		st.Bad = make(map[digest.Digest]string, len(m.bad))
		for d, why := range m.bad {
			st.Bad[d] = why
		}
	}
	m.mu.Unlock()
	sort.Slice(st.Mounts, func(i, j int) bool { return st.Mounts[i].Mountpoint < st.Mounts[j].Mountpoint })
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(m.statePath(), b, 0o600)
}

// Restore mounts again what an earlier run had mounted (after a crash or a
// reboot; mounts still alive were left by a live manager and never get
// here). TOCs come from the local store, so the registry is not needed.
func (m *Manager) Restore(ctx context.Context) error {
	b, err := os.ReadFile(m.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("state %s: %w", m.statePath(), err)
	}
	m.mu.Lock()
	for d, why := range st.Bad {
		m.bad[d] = why
	}
	m.mu.Unlock()
	var errs []error
	for _, sm := range st.Mounts {
		// A stale FUSE mount of a dead manager answers ENOTCONN: detach it.
		_ = syscall.Unmount(sm.Mountpoint, syscall.MNT_DETACH)
		if _, err := os.Stat(sm.Mountpoint); err != nil {
			m.log.Warn("not restoring a mount whose directory is gone", "mountpoint", sm.Mountpoint)
			continue
		}
		if err := m.mount(ctx, sm.Mountpoint, sm.Layer, false); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", sm.Mountpoint, err))
		}
	}
	if err := m.saveState(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Close stops background work and unmounts every layer: the manager going
// away means its mounts cannot be served.
func (m *Manager) Close() {
	m.mu.Lock()
	var mps []string
	for mp := range m.mounts {
		mps = append(mps, mp)
	}
	m.mu.Unlock()
	for _, mp := range mps {
		m.mu.Lock()
		lm := m.mounts[mp]
		m.mu.Unlock()
		if lm == nil {
			continue // unmounted meanwhile
		}
		lm.shutdown()
		if err := lm.fs.Unmount(); err != nil {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
		lm.reader.Close()
	}
	m.cache.Close()
}
