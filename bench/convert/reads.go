package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/streaming"
)

// fetchCounter counts the bytes a Reader fetches.
type fetchCounter struct {
	rr    streaming.RangeReader
	bytes atomic.Int64
}

func (f *fetchCounter) ReadRange(ctx context.Context, p []byte, off int64) error {
	f.bytes.Add(int64(len(p)))
	return f.rr.ReadRange(ctx, p, off)
}

// resettableCache lets one Reader measure each read from a cold cache.
type resettableCache struct {
	mu sync.Mutex
	c  *streaming.MemoryCache
}

func (r *resettableCache) Get(d digest.Digest) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c.Get(d)
}

func (r *resettableCache) Put(d digest.Digest, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.c.Put(d, b)
}

func (r *resettableCache) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.c = streaming.NewMemoryCache(1 << 30)
}

// amplification is what reading some files cost in fetched bytes.
type amplification struct {
	tocBytes           int64
	small, mib         stats // one ~4 KiB file, one ~1 MiB file, cold cache
	startup            int64 // the files python3 opens at start, together
	startupFiles       int
	startupContent     int64
	startupMissing     int
	smallFile, mibFile int64 // sizes of the classes
}

type stats struct {
	n           int
	median, p90 int64
}

func summarize(v []int64) stats {
	if len(v) == 0 {
		return stats{}
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	return stats{n: len(v), median: v[len(v)/2], p90: v[len(v)*9/10]}
}

// measureReads opens a converted layer and reads: every regular file of
// 3.5–4.5 KiB, every one of 0.9–1.1 MiB (up to 500 of each, sampled), each
// from a cold cache; then the startup files together.
func measureReads(blob string, res *streaming.Result, startup []string) (amplification, error) {
	ctx := context.Background()
	var a amplification
	f, err := os.Open(blob)
	if err != nil {
		return a, err
	}
	defer f.Close()
	fc := &fetchCounter{rr: streaming.ReaderAtRanges(f)}
	cache := &resettableCache{}
	cache.reset()
	r, err := streaming.Open(ctx, fc, res.Size, streaming.WithTOC(res.TOCDigest, res.TOCOffset, res.TOCSize),
		streaming.WithDiffID(res.DiffID), streaming.WithChunkCache(cache))
	if err != nil {
		return a, err
	}
	defer r.Close()
	a.tocBytes = fc.bytes.Load()
	var small, mib []*streaming.Entry
	for i := range r.Entries() {
		e := &r.Entries()[i]
		switch {
		case e.Type != streaming.TypeReg:
		case e.Size >= 3584 && e.Size <= 4608:
			small = append(small, e)
		case e.Size >= 900<<10 && e.Size <= 1100<<10:
			mib = append(mib, e)
		}
	}
	read := func(es []*streaming.Entry) ([]int64, error) {
		rng := rand.New(rand.NewPCG(1, 2))
		rng.Shuffle(len(es), func(i, j int) { es[i], es[j] = es[j], es[i] })
		var out []int64
		for _, e := range es[:min(len(es), 500)] {
			cache.reset()
			before := fc.bytes.Load()
			buf := make([]byte, e.Size)
			if _, err := r.ReadAt(ctx, e, buf, 0); err != nil {
				return nil, fmt.Errorf("reading %s: %w", e.Name, err)
			}
			out = append(out, fc.bytes.Load()-before)
		}
		return out, nil
	}
	v, err := read(small)
	if err != nil {
		return a, err
	}
	a.small = summarize(v)
	if v, err = read(mib); err != nil {
		return a, err
	}
	a.mib = summarize(v)
	cache.reset()
	before := fc.bytes.Load()
	for _, name := range startup {
		e, err := r.Lookup(name)
		if err != nil || r.DataEntry(e).Type != streaming.TypeReg {
			a.startupMissing++
			continue
		}
		buf := make([]byte, r.DataEntry(e).Size)
		if _, err := r.ReadAt(ctx, e, buf, 0); err != nil {
			return a, fmt.Errorf("reading %s: %w", name, err)
		}
		a.startupFiles++
		a.startupContent += int64(len(buf))
	}
	a.startup = fc.bytes.Load() - before
	return a, nil
}
