package fusemanager

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/streaming"
)

// Startup profiles. A container starting reads a small part of its image,
// mostly the same part each time, one read after another: each read that
// misses waits for its own round trip. The first node to start a layer
// records which chunks the container read, in the order it first read
// them, and gives that list to the registry (PUT /acr/v1/{repo}/_profiles/
// {layer}); a node mounting the layer later gets the list with the mount
// and fetches those chunks at once, a few requests in parallel, while
// containerd is still creating the container. Reads then find them cached.
//
// Nothing is trusted from a profile but offsets: ranges outside the layer
// or beyond a profile's limits are dropped before anything is fetched,
// every chunk is verified against the TOC as any other, and a profile that
// names no chunk of the layer is ignored.

const (
	// profileWindow ends a recording this long after the first read at
	// the latest: later reads are the container running, not starting.
	profileWindow = 30 * time.Second
	// profileQuietMin is the shortest pause in reads that ends a
	// recording (the background delay when it is longer).
	profileQuietMin = 2 * time.Second
	// profileTimeout bounds asking for and giving a profile.
	profileTimeout = 10 * time.Second
	// prefetchWorkers and prefetchBatchBytes shape prefetching: a few
	// ranges in flight, small enough that a read of a chunk not in the
	// profile waits little behind them.
	prefetchWorkers    = 2
	prefetchBatchBytes = 1 << 20
	// prefetchVerifyQueue is how many fetched batches may wait for
	// verification before the fetchers wait too.
	prefetchVerifyQueue = 4
	// profileRecordedShare: a profile that missed more than this share of
	// a start's bytes is replaced by that start's recording.
	profileRecordedShare = 0.25
)

// profileAnswer is the registry's answer to a profile request: ranges of
// the blob (nil for none), or the error that kept it from answering.
type profileAnswer struct {
	ranges []streaming.Range
	err    error
}

// profile is a mount's profile work: the registry's profile of the layer
// and the recording of this start.
type profile struct {
	// known is the registry's profile as chunk indices; ready is closed
	// once it (or knownErr) is set.
	known    []int
	knownErr error
	ready    chan struct{}

	finished atomic.Bool // the recording is over
	mu       sync.Mutex
	seen     map[int]struct{}
	order    []int
}

func newProfile() *profile {
	return &profile{ready: make(chan struct{}), seen: map[int]struct{}{}}
}

// recording reports whether reads are still being recorded: once it is
// over, a read need not work out its chunks.
func (p *profile) recording() bool { return !p.finished.Load() }

// note records the chunks of a read not seen before, in order.
func (p *profile) note(idx []int) {
	if len(idx) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished.Load() {
		return
	}
	for _, i := range idx {
		if _, ok := p.seen[i]; !ok {
			p.seen[i] = struct{}{}
			p.order = append(p.order, i)
		}
	}
}

// finish ends the recording and returns it.
func (p *profile) finish() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finished.Store(true)
	return p.order
}

// fetchProfile asks the registry for a layer's profile, in the
// background.
func (m *Manager) fetchProfile(ref LayerRef) <-chan profileAnswer {
	out := make(chan profileAnswer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), profileTimeout)
		defer cancel()
		ranges, err := m.client(ref).StartupProfile(ctx, ref.Repository, ref.Digest)
		out <- profileAnswer{ranges, err}
	}()
	return out
}

// startProfile prefetches the registry's profile of a layer as soon as it
// arrives (starting before the TOC is loaded), and records this start
// until the container is past it, then gives the recording to the
// registry when it has no profile of the layer or a poor one.
func (m *Manager) startProfile(lm *mounted, known <-chan profileAnswer) {
	p := lm.profile
	lm.goWork(func() {
		var ans profileAnswer
		select {
		case ans = <-known:
		case <-lm.ctx.Done():
			ans.err = lm.ctx.Err()
		}
		if ans.err != nil {
			p.knownErr = ans.err
			close(p.ready)
			if errors.Is(ans.err, client.ErrNoProfiles) {
				m.log.Debug("the registry keeps no startup profiles", "registry", lm.ref.Registry)
			} else if lm.ctx.Err() == nil {
				m.metrics.profiles.WithLabelValues("failed").Inc()
				m.log.Warn("could not read the layer's startup profile; the layer is read on demand only", "image", lm.ref.ImageRef, "layer", lm.ref.SourceDigest, "err", ans.err)
			}
			return
		}
		pf := &prefetcher{m: m, lm: lm, remote: m.remote(lm.ref),
			verify: make(chan claimedBatch, prefetchVerifyQueue), fetching: map[*rawFetch]struct{}{}}
		pf.space = sync.NewCond(&pf.mu)
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Ranges are fetched before the TOC can say which are
			// chunks: a registry that did not check them must not make
			// the node allocate what they say.
			pf.run(streaming.FitProfile(ans.ranges, lm.ref.Size))
		}()
		select {
		case <-lm.opened:
			p.known = m.profileChunks(lm, ans.ranges)
		case <-lm.ctx.Done():
			p.knownErr = lm.ctx.Err()
		}
		close(p.ready)
		pf.opened()
		<-done
	})
	lm.goWork(func() {
		rec, ok := m.record(lm)
		if ok {
			m.giveProfile(lm, rec)
		}
	})
}

// profileChunks maps a profile's ranges to the layer's chunks, keeping
// their order and dropping ranges that are not exactly a chunk.
func (m *Manager) profileChunks(lm *mounted, ranges []streaming.Range) []int {
	idx := make([]int, 0, len(ranges))
	dropped := 0
	for _, r := range ranges {
		if i, ok := lm.reader.ChunkAt(r.Offset, r.Length); ok {
			idx = append(idx, i)
		} else {
			dropped++
		}
	}
	if dropped > 0 {
		m.log.Warn("the layer's startup profile names ranges that are not chunks of it; they are ignored",
			"layer", lm.ref.SourceDigest, "ignored", dropped, "of", len(ranges))
	}
	return idx
}

// prefetchEarlyBytes bounds what is fetched before the TOC is loaded (and
// so before the ranges can be checked against it).
const prefetchEarlyBytes = 32 << 20

// prefetcher fetches a profile's ranges in order, a few batches in flight.
// Before the layer's TOC is loaded it fetches the frames raw and keeps
// them; once it is, they are verified and cached. Later batches claim
// their chunks from the reader (skipping those cached or being read), so
// that reads of them wait for the prefetch instead of fetching them again.
// One goroutine verifies what the fetchers bring: fetching never waits for
// verification, which keeps the link busy on a small node.
type prefetcher struct {
	m      *Manager
	lm     *mounted
	remote streaming.MultiRangeReader
	verify chan claimedBatch

	mu        sync.Mutex
	isOpen    bool
	held      []heldBatch
	heldBytes int64
	fetching  map[*rawFetch]struct{} // raw fetches under way
	space     *sync.Cond             // signalled when the TOC is loaded
}

// rawFetch is a batch being fetched raw, before the TOC was loaded. If the
// TOC loads while it is under way, its chunks are claimed at once, so that
// the container's first reads wait for them rather than fetch them again
// (on a slow link the first batches arrive after those reads start).
type rawFetch struct {
	ranges  []streaming.Range
	claimed bool
	chunks  []int // the chunks claimed, and their positions in ranges
	pos     []int
}

// heldBatch is a batch of frames fetched before the TOC was loaded.
type heldBatch struct {
	ranges []streaming.Range
	frames [][]byte
}

// claimedBatch is a batch of frames of chunks claimed from the reader,
// waiting to be verified.
type claimedBatch struct {
	chunks []int
	frames [][]byte
}

func (pf *prefetcher) run(ranges []streaming.Range) {
	lm := pf.lm
	start := time.Now()
	var batches [][]streaming.Range
	var cur []streaming.Range
	var curBytes, total int64
	// Batches grow: the first holds the first range alone, then 256 KiB,
	// 512 KiB, up to prefetchBatchBytes. A read of a chunk being
	// prefetched waits for its whole batch, and the container's first
	// reads (containerd reads /etc/group as it creates it) come early.
	limit := int64(0)
	for _, r := range ranges {
		cur = append(cur, r)
		curBytes += r.Length
		total += r.Length
		if curBytes >= limit {
			batches, cur, curBytes = append(batches, cur), nil, 0
			limit = min(max(2*limit, 256<<10), prefetchBatchBytes)
		}
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	if len(batches) == 0 {
		return
	}
	ctx := withKind(lm.ctx, prefetch)
	work := make(chan []streaming.Range)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	verified := make(chan struct{})
	go func() {
		defer close(verified)
		for cb := range pf.verify {
			if err := pf.supplyClaimed(ctx, cb); err != nil && ctx.Err() == nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
			}
		}
	}()
	for range min(prefetchWorkers, len(batches)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				if err := pf.batch(ctx, b); err != nil && ctx.Err() == nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
				}
			}
		}()
	}
	for _, b := range batches {
		select {
		case work <- b:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	close(pf.verify)
	<-verified
	switch {
	case ctx.Err() != nil:
	case firstErr != nil:
		if errors.Is(firstErr, streaming.ErrChunkVerification) {
			pf.m.metrics.verifyFailures.Inc()
		}
		pf.m.log.Warn("prefetching the layer's startup profile failed; reads fetch what they need", "image", lm.ref.ImageRef, "layer", lm.ref.SourceDigest, "err", firstErr)
	default:
		<-lm.profile.ready
		if len(lm.profile.known) == 0 {
			return // none of its ranges is a chunk of the layer: profileChunks said so
		}
		pf.m.metrics.profiles.WithLabelValues("prefetched").Inc()
		pf.m.log.Info("startup profile prefetched", "image", lm.ref.ImageRef, "layer", lm.ref.SourceDigest,
			"chunks", len(lm.profile.known), "bytes", total, "duration", time.Since(start).Round(time.Millisecond))
	}
}

// batch fetches one batch of ranges.
func (pf *prefetcher) batch(ctx context.Context, b []streaming.Range) error {
	lm := pf.lm
	pf.mu.Lock()
	for !pf.isOpen && pf.heldBytes >= prefetchEarlyBytes && ctx.Err() == nil {
		pf.space.Wait()
	}
	if pf.isOpen {
		pf.mu.Unlock()
		if err := ctx.Err(); err != nil {
			// The mount ended, perhaps because its TOC did not load:
			// then it has no reader.
			return err
		}
		var idx []int
		for _, r := range b {
			if i, ok := lm.reader.ChunkAt(r.Offset, r.Length); ok {
				idx = append(idx, i)
			}
		}
		mine := lm.reader.Claim(idx)
		if len(mine) == 0 {
			return nil
		}
		chunks := lm.reader.TOC().Chunks
		ranges := make([]streaming.Range, len(mine))
		frames := make([][]byte, len(mine))
		for k, i := range mine {
			ranges[k] = streaming.Range{Offset: chunks[i].Offset, Length: chunks[i].Size}
			frames[k] = make([]byte, chunks[i].Size)
		}
		if err := pf.remote.ReadRanges(ctx, ranges, frames); err != nil {
			lm.reader.Release(mine)
			return err
		}
		pf.verify <- claimedBatch{mine, frames}
		return nil
	}
	sorted := slices.Clone(b)
	slices.SortFunc(sorted, func(x, y streaming.Range) int { return cmp.Compare(x.Offset, y.Offset) })
	frames := make([][]byte, len(sorted))
	var n int64
	for k, r := range sorted {
		frames[k] = make([]byte, r.Length)
		n += r.Length
	}
	rf := &rawFetch{ranges: sorted}
	pf.fetching[rf] = struct{}{}
	pf.mu.Unlock()
	err := pf.remote.ReadRanges(ctx, sorted, frames)
	pf.mu.Lock()
	delete(pf.fetching, rf)
	if !pf.isOpen {
		if err == nil {
			pf.held = append(pf.held, heldBatch{sorted, frames})
			pf.heldBytes += n
		}
		pf.mu.Unlock()
		return err
	}
	pf.mu.Unlock()
	if !rf.claimed {
		return ctx.Err() // the mount ended without a reader
	}
	if err != nil {
		lm.reader.Release(rf.chunks)
		return err
	}
	pf.verify <- claimedBatch{rf.chunks, pick(frames, rf.pos)}
	return nil
}

// opened is called once the TOC is loaded (or the mount ended): it lets
// the workers go on and verifies what they fetched before.
func (pf *prefetcher) opened() {
	hasReader := false
	select {
	case <-pf.lm.opened:
		hasReader = true
	default:
	}
	pf.mu.Lock()
	pf.isOpen = true
	held := pf.held
	pf.held = nil
	if hasReader {
		for rf := range pf.fetching {
			rf.chunks, rf.pos = pf.claimRanges(rf.ranges)
			rf.claimed = true
		}
	}
	pf.space.Broadcast()
	pf.mu.Unlock()
	if !hasReader || pf.lm.ctx.Err() != nil {
		return
	}
	// Claim every held chunk first, so that reads starting now wait for
	// them instead of fetching them again.
	var batches []claimedBatch
	for _, h := range held {
		chunks, pos := pf.claimRanges(h.ranges)
		batches = append(batches, claimedBatch{chunks, pick(h.frames, pos)})
	}
	for _, cb := range batches {
		if err := pf.supplyClaimed(pf.lm.ctx, cb); err != nil {
			if errors.Is(err, streaming.ErrChunkVerification) {
				pf.m.metrics.verifyFailures.Inc()
			}
			pf.m.log.Warn("a prefetched chunk failed verification; reads fetch it again", "image", pf.lm.ref.ImageRef, "layer", pf.lm.ref.SourceDigest, "err", err)
		}
	}
}

// claimRanges claims the chunks of frames fetched raw (or being fetched)
// and returns them with their positions in ranges. Ranges that are not
// chunks of the layer, and chunks already cached or being read, are left
// out.
func (pf *prefetcher) claimRanges(ranges []streaming.Range) (chunks, pos []int) {
	for k, r := range ranges {
		i, ok := pf.lm.reader.ChunkAt(r.Offset, r.Length)
		if ok && len(pf.lm.reader.Claim([]int{i})) == 1 {
			chunks = append(chunks, i)
			pos = append(pos, k)
		}
	}
	return chunks, pos
}

// pick returns frames[pos[0]], frames[pos[1]], ...
func pick(frames [][]byte, pos []int) [][]byte {
	out := make([][]byte, len(pos))
	for k, p := range pos {
		out[k] = frames[p]
	}
	return out
}

// supplyClaimed verifies and caches claimed frames; once the mount has
// ended, or after a frame fails, the rest are released (reads that want
// them fetch them).
func (pf *prefetcher) supplyClaimed(ctx context.Context, cb claimedBatch) error {
	for k, i := range cb.chunks {
		if err := ctx.Err(); err != nil {
			pf.lm.reader.Release(cb.chunks[k:])
			return err
		}
		if err := pf.lm.reader.Supply(i, cb.frames[k]); err != nil {
			pf.lm.reader.Release(cb.chunks[k+1:])
			return err
		}
	}
	return nil
}

// record waits for this start to be over (reads quiet for a while, or
// profileWindow after the first) and returns what it read; false when the
// mount ended first or nothing was read.
func (m *Manager) record(lm *mounted) ([]int, bool) {
	select {
	case <-lm.read:
	case <-lm.ctx.Done():
		return nil, false
	}
	quiet := max(m.cfg.BackgroundDelay, profileQuietMin)
	deadline := time.Now().Add(profileWindow)
	for {
		since := time.Since(time.Unix(0, lm.lastDemand.Load()))
		left := time.Until(deadline)
		if since >= quiet || left <= 0 {
			break
		}
		select {
		case <-lm.ctx.Done():
			return nil, false
		case <-time.After(min(quiet-since, left)):
		}
	}
	rec := lm.profile.finish()
	return rec, len(rec) > 0
}

// giveProfile gives the registry the recording of this start unless its
// profile of the layer already covered the start well.
func (m *Manager) giveProfile(lm *mounted, rec []int) {
	p := lm.profile
	select {
	case <-p.ready:
	case <-lm.ctx.Done():
		return
	}
	if p.knownErr != nil {
		return // the registry does not keep profiles, or could not say
	}
	if lm.bad.Load() {
		return // what a bad layer's start read is nothing to prefetch
	}
	chunks := lm.reader.TOC().Chunks
	// The registry's profile is judged against the recording cut to what
	// a profile may hold: judged against all of a start that read more,
	// it would be replaced by an equal one on every start.
	ranges := make([]streaming.Range, len(rec))
	for k, i := range rec {
		ranges[k] = streaming.Range{Offset: chunks[i].Offset, Length: chunks[i].Size}
	}
	// Chunks lie inside the layer: fitting only cuts the tail.
	ranges = streaming.FitProfile(ranges, lm.ref.Size)
	if len(ranges) == 0 {
		return
	}
	rec = rec[:len(ranges)]
	var total int64
	for _, r := range ranges {
		total += r.Length
	}
	if len(p.known) > 0 {
		inKnown := make(map[int]bool, len(p.known))
		for _, i := range p.known {
			inKnown[i] = true
		}
		var missed int64
		for _, i := range rec {
			if !inKnown[i] {
				missed += chunks[i].Size
			}
		}
		if float64(missed) <= profileRecordedShare*float64(total) {
			return
		}
	}
	ctx, cancel := context.WithTimeout(lm.ctx, profileTimeout)
	defer cancel()
	if err := m.client(lm.ref).PutStartupProfile(ctx, lm.ref.Repository, lm.ref.Digest, ranges); err != nil {
		if lm.ctx.Err() == nil {
			m.metrics.profiles.WithLabelValues("failed").Inc()
			m.log.Warn("could not give the registry the layer's startup profile", "image", lm.ref.ImageRef, "layer", lm.ref.SourceDigest, "err", err)
		}
		return
	}
	m.metrics.profiles.WithLabelValues("recorded").Inc()
	m.log.Info("startup profile recorded", "image", lm.ref.ImageRef, "layer", lm.ref.SourceDigest, "chunks", len(ranges), "bytes", total)
}
