package fusemanager

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/sluicehq/sluice/internal/streaming"
)

// Prefetching a startup profile (profile.go): its chunks are fetched in
// order as soon as the registry names them, while the TOC still loads.

const (
	// prefetchWorkers and prefetchBatchBytes shape prefetching: a few
	// ranges in flight, small enough that a read of a chunk not in the
	// profile waits little behind them.
	prefetchWorkers    = 2
	prefetchBatchBytes = 1 << 20
	// prefetchVerifyQueue is how many fetched batches may wait for
	// verification before the fetchers wait too.
	prefetchVerifyQueue = 4
	// prefetchEarlyBytes bounds what is fetched before the TOC is loaded
	// (and so before the ranges can be checked against it).
	prefetchEarlyBytes = 32 << 20
)

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

func newPrefetcher(m *Manager, lm *mounted) *prefetcher {
	pf := &prefetcher{m: m, lm: lm, remote: m.remote(lm.ref, &lm.fetched),
		verify: make(chan claimedBatch, prefetchVerifyQueue), fetching: map[*rawFetch]struct{}{}}
	pf.space = sync.NewCond(&pf.mu)
	return pf
}

// run fetches the profile's ranges and verifies what it fetched, then says
// how it went.
func (pf *prefetcher) run(ranges []streaming.Range) {
	start := time.Now()
	batches, total := profileBatches(ranges)
	if len(batches) == 0 {
		return
	}
	ctx := withKind(pf.lm.ctx, prefetch)
	var failed firstError
	verified := make(chan struct{})
	go func() {
		defer close(verified)
		for cb := range pf.verify {
			failed.keep(ctx, pf.supplyClaimed(ctx, cb))
		}
	}()
	work := make(chan []streaming.Range)
	var wg sync.WaitGroup
	for range min(prefetchWorkers, len(batches)) {
		wg.Go(func() {
			for b := range work {
				failed.keep(ctx, pf.batch(ctx, b))
			}
		})
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
	if ctx.Err() == nil {
		pf.report(failed.err, total, time.Since(start))
	}
}

// profileBatches cuts a profile's ranges into batches, and adds up their
// bytes. Batches grow: the first holds the first range alone, then
// 256 KiB, 512 KiB, up to prefetchBatchBytes. A read of a chunk being
// prefetched waits for its whole batch, and the container's first reads
// (containerd reads /etc/group as it creates it) come early.
func profileBatches(ranges []streaming.Range) (batches [][]streaming.Range, total int64) {
	var cur []streaming.Range
	var curBytes, limit int64
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
	return batches, total
}

// firstError keeps the first error of several goroutines; none once ctx
// has ended (a mount that ends is no failure of its prefetch).
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) keep(ctx context.Context, err error) {
	if err == nil || ctx.Err() != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

// report says how a prefetch that ran to its end went.
func (pf *prefetcher) report(err error, total int64, took time.Duration) {
	lm := pf.lm
	if err != nil {
		if errors.Is(err, streaming.ErrChunkVerification) {
			pf.m.metrics.verifyFailures.Inc()
		}
		pf.m.log.Warn("prefetching the layer's startup profile failed; reads fetch what they need", "image", lm.ref.ImageRef, "layer", lm.ref.SourceDigest, "err", err)
		return
	}
	<-lm.profile.ready
	if len(lm.profile.known) == 0 {
		return // none of its ranges is a chunk of the layer: profileChunks said so
	}
	pf.m.metrics.profiles.WithLabelValues("prefetched").Inc()
	pf.m.log.Info("startup profile prefetched", "image", lm.ref.ImageRef, "layer", lm.ref.SourceDigest,
		"chunks", len(lm.profile.known), "bytes", total, "duration", took.Round(time.Millisecond))
}

// batch fetches one batch of ranges: claimed from the reader once the TOC
// is loaded, raw before.
func (pf *prefetcher) batch(ctx context.Context, b []streaming.Range) error {
	pf.mu.Lock()
	for !pf.isOpen && pf.heldBytes >= prefetchEarlyBytes && ctx.Err() == nil {
		pf.space.Wait()
	}
	if pf.isOpen {
		pf.mu.Unlock()
		return pf.fetchClaimed(ctx, b)
	}
	sorted := slices.Clone(b)
	slices.SortFunc(sorted, func(x, y streaming.Range) int { return cmp.Compare(x.Offset, y.Offset) })
	rf := &rawFetch{ranges: sorted}
	pf.fetching[rf] = struct{}{}
	pf.mu.Unlock()
	return pf.fetchRaw(ctx, rf)
}

// fetchClaimed claims the chunks of a batch from the reader (those not
// cached or being read), fetches them and hands them to the verifier.
func (pf *prefetcher) fetchClaimed(ctx context.Context, b []streaming.Range) error {
	lm := pf.lm
	if err := ctx.Err(); err != nil {
		// The mount ended, perhaps because its TOC did not load: then
		// it has no reader.
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

// fetchRaw fetches a batch before the TOC is loaded: the frames are held
// until it is, or handed to the verifier when it loaded meanwhile (opened
// claimed their chunks).
func (pf *prefetcher) fetchRaw(ctx context.Context, rf *rawFetch) error {
	frames := make([][]byte, len(rf.ranges))
	var n int64
	for k, r := range rf.ranges {
		frames[k] = make([]byte, r.Length)
		n += r.Length
	}
	err := pf.remote.ReadRanges(ctx, rf.ranges, frames)
	pf.mu.Lock()
	delete(pf.fetching, rf)
	if !pf.isOpen {
		if err == nil {
			pf.held = append(pf.held, heldBatch{rf.ranges, frames})
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
		pf.lm.reader.Release(rf.chunks)
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
