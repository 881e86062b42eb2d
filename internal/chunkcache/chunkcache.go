// Package chunkcache keeps verified, uncompressed layer chunks on disk,
// content-addressed by their sha256 and shared by every layer a node
// mounts. It is bounded in size: the least recently used chunks go first.
// Every chunk read back is verified again, so a damaged or tampered file is
// a miss, never wrong bytes.
package chunkcache

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/streaming"
)

// Cache is an on-disk chunk cache. It implements streaming.ChunkCache.
//
// Recently used chunks are also kept in memory, and chunks are written to
// disk in the background: a container's read never waits for the cache's
// disk write. The writes wait for a pause in puts (see Options.WriteDelay):
// a container's start, when chunks arrive fastest, is when the CPU time the
// writes take matters most.
type Cache struct {
	dir string
	max int64

	memory   *streaming.MemoryCache
	reads    singleflight.Group // reads from disk, by chunk
	preloads chan struct{}      // a slot for each Preload reading at once
	preloadW sync.WaitGroup
	pending  chan pendingChunk
	writes   sync.WaitGroup
	qmu      sync.RWMutex // guards sends on pending against Close
	closed   bool

	writeDelay time.Duration
	now        func() time.Time
	lastPut    atomic.Int64 // unix nanoseconds
	// queued is the bytes of the chunks waiting for the disk, held outside
	// the memory front's bound: at most maxQueued.
	queued    atomic.Int64
	maxQueued int64
	urgent    atomic.Int32 // a Flush or Close is waiting: write at once

	mu    sync.Mutex
	size  int64
	order *list.List // front: most recently used
	items map[digest.Digest]*list.Element

	hits, misses, evictions, corrupt, preloaded atomic.Int64
}

type item struct {
	sum  digest.Digest
	size int64
}

type pendingChunk struct {
	sum   digest.Digest
	data  []byte
	flush chan struct{} // a marker: closed once what was queued before it is stored
}

// Options tune a cache.
type Options struct {
	// MemoryBytes is how much chunk data is also kept in memory (default
	// DefaultMemoryBytes), whatever the disk bound: a chunk larger than the
	// disk cache is then still read from memory while it is being read, not
	// fetched again for every read.
	MemoryBytes int64
	// WriteDelay is how long puts must pause before queued chunks are
	// written to disk (default DefaultWriteDelay; negative: no wait). A
	// queue more than half full is written without waiting.
	WriteDelay time.Duration
	// Now is the clock the write delay is measured with; nil means
	// time.Now. Tests move time themselves.
	Now func() time.Time
}

// DefaultWriteDelay is the default pause in puts before disk writes.
const DefaultWriteDelay = time.Second

// DefaultMemoryBytes is the default memory front: enough for what a large
// image's start reads (numpy and scipy's start touches about 65 MiB of
// chunks), so that chunks prefetched for a start are still in memory when
// the container reads them, not read back from disk and verified again.
const DefaultMemoryBytes = 256 << 20

// Open opens (creating) a cache in dir holding at most maxBytes, and
// indexes what an earlier run left there, oldest first to go.
func Open(dir string, maxBytes int64) (*Cache, error) {
	return OpenWith(dir, maxBytes, Options{})
}

// OpenWith is Open with options.
func OpenWith(dir string, maxBytes int64, o Options) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("chunk cache %s: %w", dir, err)
	}
	if o.MemoryBytes <= 0 {
		o.MemoryBytes = DefaultMemoryBytes
	}
	if o.WriteDelay == 0 {
		o.WriteDelay = DefaultWriteDelay
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Cache{dir: dir, max: maxBytes, order: list.New(), items: map[digest.Digest]*list.Element{},
		memory: streaming.NewMemoryCache(o.MemoryBytes), pending: make(chan pendingChunk, 256), writeDelay: o.WriteDelay, now: o.Now,
		maxQueued: o.MemoryBytes / 2, preloads: make(chan struct{}, maxPreloads)}
	type found struct {
		item
		mtime time.Time
	}
	var all []found
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		sum := digest.NewDigestFromEncoded(digest.SHA256, d.Name())
		if sum.Validate() != nil {
			_ = os.Remove(p) // a temporary file a crash left
			return nil
		}
		all = append(all, found{item{sum, info.Size()}, info.ModTime()})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(all, func(i, j int) bool { return all[i].mtime.After(all[j].mtime) })
	for _, f := range all {
		c.items[f.sum] = c.order.PushBack(&item{f.sum, f.size})
		c.size += f.size
	}
	c.mu.Lock()
	c.evictLocked()
	c.mu.Unlock()
	c.writes.Add(1)
	go c.writer()
	return c, nil
}

// writer stores queued chunks on disk.
func (c *Cache) writer() {
	defer c.writes.Done()
	for p := range c.pending {
		if p.flush != nil {
			close(p.flush)
			continue
		}
		c.waitQuiet()
		c.store(p.sum, p.data)
		c.queued.Add(-int64(len(p.data)))
	}
}

// waitQuiet holds the disk writes back until puts pause for the write
// delay, unless the queue is half full (in chunks or in bytes) or a Flush
// or Close waits.
func (c *Cache) waitQuiet() {
	for c.urgent.Load() == 0 && len(c.pending) < cap(c.pending)/2 && c.queued.Load() < c.maxQueued/2 {
		since := c.now().Sub(time.Unix(0, c.lastPut.Load()))
		if since >= c.writeDelay {
			return
		}
		time.Sleep(min(c.writeDelay-since, 20*time.Millisecond))
	}
}

// Flush waits until the chunks queued so far are on disk.
func (c *Cache) Flush() {
	c.urgent.Add(1)
	defer c.urgent.Add(-1)
	done := make(chan struct{})
	c.qmu.RLock()
	if c.closed {
		c.qmu.RUnlock()
		return
	}
	c.pending <- pendingChunk{flush: done}
	c.qmu.RUnlock()
	<-done
}

// Close waits for queued chunks to reach the disk, and for preloads.
func (c *Cache) Close() {
	c.urgent.Add(1)
	c.qmu.Lock()
	if !c.closed {
		c.closed = true
		close(c.pending)
	}
	c.qmu.Unlock()
	c.writes.Wait()
	c.preloadW.Wait()
}

func (c *Cache) path(sum digest.Digest) string {
	enc := sum.Encoded()
	return filepath.Join(c.dir, enc[:2], enc)
}

// Get returns a chunk's bytes if they are cached and still hash to sum.
// Chunks held in memory were verified when they were put.
func (c *Cache) Get(sum digest.Digest) ([]byte, bool) {
	if data, ok := c.memory.Get(sum); ok {
		c.mu.Lock()
		if el, ok := c.items[sum]; ok {
			c.order.MoveToFront(el) // keep the disk's order honest
		}
		c.mu.Unlock()
		c.hits.Add(1)
		return data, true
	}
	c.mu.Lock()
	el, ok := c.items[sum]
	if ok {
		c.order.MoveToFront(el)
	}
	c.mu.Unlock()
	if !ok {
		c.misses.Add(1)
		return nil, false
	}
	data := c.load(sum)
	if data == nil {
		c.misses.Add(1)
		return nil, false
	}
	c.hits.Add(1)
	return data, true
}

// load reads a chunk from disk, checks its sha256 and keeps it in the
// memory front; nil when the file is missing or damaged (then forgotten).
// Concurrent reads of one file often want the same chunk at once (the
// kernel's read-ahead, the reader's own read, a Preload): one reads and
// hashes it, the others share what it read.
func (c *Cache) load(sum digest.Digest) []byte {
	v, _, _ := c.reads.Do(string(sum), func() (any, error) {
		data, err := os.ReadFile(c.path(sum))
		if err != nil || digest.NewDigestFromBytes(digest.SHA256, sha256Sum(data)) != sum {
			if err == nil {
				c.corrupt.Add(1)
			}
			c.forget(sum)
			return nil, nil
		}
		c.memory.Put(sum, data)
		return data, nil
	})
	data, _ := v.([]byte)
	return data
}

// maxPreloads is how many chunks Preload reads from disk at once: enough
// to keep a read or two ahead of each of a few files read in order.
const maxPreloads = 4

// Preload reads a chunk the disk holds into the memory front in the
// background, checked as Get checks it, so that a reader going through a
// layer in order finds its next chunk in memory instead of waiting for the
// disk and the hash inside its read. It does nothing for a chunk already
// in memory or not on disk (nothing is fetched), or when maxPreloads are
// already reading.
func (c *Cache) Preload(sum digest.Digest) {
	if c.memory.Has(sum) {
		return
	}
	c.mu.Lock()
	_, ok := c.items[sum]
	c.mu.Unlock()
	if !ok {
		return
	}
	c.qmu.RLock() // Close waits for the preloads it did not refuse
	defer c.qmu.RUnlock()
	if c.closed {
		return
	}
	select {
	case c.preloads <- struct{}{}:
	default:
		return
	}
	c.preloadW.Add(1)
	go func() {
		defer c.preloadW.Done()
		defer func() { <-c.preloads }()
		if c.load(sum) != nil {
			c.preloaded.Add(1)
		}
	}()
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// Has reports whether the cache holds a chunk (in memory or on disk)
// without reading it.
func (c *Cache) Has(sum digest.Digest) bool {
	if c.memory.Has(sum) {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[sum]
	return ok
}

// Put keeps a verified chunk in memory at once and queues it for the disk;
// when the queue is full (256 chunks, or half the memory front's bytes) the
// disk copy is skipped (the chunk is only fetched again later, if ever
// needed).
func (c *Cache) Put(sum digest.Digest, data []byte) {
	c.lastPut.Store(c.now().UnixNano())
	c.memory.Put(sum, data)
	c.qmu.RLock()
	defer c.qmu.RUnlock()
	if c.closed {
		return
	}
	if c.queued.Add(int64(len(data))) > c.maxQueued {
		c.queued.Add(-int64(len(data)))
		return
	}
	select {
	case c.pending <- pendingChunk{sum: sum, data: data}:
	default:
		c.queued.Add(-int64(len(data)))
	}
}

// WaitRoom waits until the queue of chunks to write to disk can take n
// more bytes (and a few more chunks), so that a caller that must leave its
// chunks on disk, as a layer's background completion, does not have them
// dropped by a full queue. A cache closed meanwhile returns at once.
func (c *Cache) WaitRoom(ctx context.Context, n int64) error {
	n = min(n, c.maxQueued) // a batch larger than the queue: as much as fits
	for {
		c.qmu.RLock()
		closed := c.closed
		c.qmu.RUnlock()
		if closed || (c.queued.Load()+n <= c.maxQueued && len(c.pending) < cap(c.pending)/2) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// store writes a chunk to disk under a temporary name, then renames it, so
// a crash never leaves half a chunk under its name.
func (c *Cache) store(sum digest.Digest, data []byte) {
	c.mu.Lock()
	_, ok := c.items[sum]
	c.mu.Unlock()
	if ok || int64(len(data)) > c.max {
		return
	}
	p := c.path(sum)
	if err := writeAtomic(p, data); err != nil {
		return // a cache that cannot write is only slower
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[sum]; ok {
		return
	}
	c.items[sum] = c.order.PushFront(&item{sum, int64(len(data))})
	c.size += int64(len(data))
	c.evictLocked()
}

func writeAtomic(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}

// evictLocked removes least recently used chunks until the cache fits, from
// memory too (only chunks too big for the disk live in memory alone).
func (c *Cache) evictLocked() {
	for c.size > c.max {
		el := c.order.Back()
		if el == nil {
			return
		}
		it := el.Value.(*item)
		c.order.Remove(el)
		delete(c.items, it.sum)
		c.size -= it.size
		c.evictions.Add(1)
		c.memory.Remove(it.sum)
		_ = os.Remove(c.path(it.sum))
	}
}

// Remove drops chunks, for a layer containerd removed.
func (c *Cache) Remove(sums []digest.Digest) {
	for _, s := range sums {
		c.forget(s)
	}
}

func (c *Cache) forget(sum digest.Digest) {
	c.memory.Remove(sum)
	c.mu.Lock()
	el, ok := c.items[sum]
	if ok {
		c.order.Remove(el)
		delete(c.items, sum)
		c.size -= el.Value.(*item).size
	}
	c.mu.Unlock()
	if err := os.Remove(c.path(sum)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return
	}
}

// Stats are the cache's counters.
type Stats struct {
	Size, Max                         int64
	Chunks                            int
	Hits, Misses, Evictions, Corrupts int64
	// Preloaded counts chunks Preload brought from disk into memory.
	Preloaded int64
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Size: c.size, Max: c.max, Chunks: len(c.items), Hits: c.hits.Load(), Misses: c.misses.Load(),
		Evictions: c.evictions.Load(), Corrupts: c.corrupt.Load(), Preloaded: c.preloaded.Load()}
}
