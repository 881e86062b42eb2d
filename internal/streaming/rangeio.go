package streaming

import (
	"container/list"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Range is the byte range [Offset, Offset+Length) of a blob.
type Range struct {
	Offset, Length int64
}

// RangeReader reads byte ranges of one blob: a local file, an io.ReaderAt,
// or HTTP range requests. ReadRange fills all of p with the bytes at off or
// returns an error.
type RangeReader interface {
	ReadRange(ctx context.Context, p []byte, off int64) error
}

// MultiRangeReader is a RangeReader that can answer several ranges in one
// call (an HTTP multi-range request, say). The Reader uses ReadRanges when
// its RangeReader has it. bufs[i] has len ranges[i].Length.
type MultiRangeReader interface {
	RangeReader
	ReadRanges(ctx context.Context, ranges []Range, bufs [][]byte) error
}

// ReaderAtRanges adapts an io.ReaderAt (an *os.File, a bytes.Reader) to a
// RangeReader.
func ReaderAtRanges(ra io.ReaderAt) RangeReader { return readerAtRanges{ra} }

type readerAtRanges struct{ ra io.ReaderAt }

func (r readerAtRanges) ReadRange(ctx context.Context, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n, err := r.ra.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading %d bytes at offset %d: %w", len(p), off, err)
}

// ChunkCache holds verified uncompressed chunks keyed by their sha256, so
// one cache (in memory, or on disk) can serve every layer. Get returns the
// bytes and true on a hit; callers must not modify them. Implementations
// must be safe for concurrent use. The Reader checks the length of what Get
// returns and trusts its content: a cache that can be corrupted (on disk)
// should verify on Get, or be opened WithVerifyCache.
type ChunkCache interface {
	Get(sum digest.Digest) ([]byte, bool)
	Put(sum digest.Digest, data []byte)
}

// Remove drops a chunk from the cache.
func (c *MemoryCache) Remove(sum digest.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[sum]; ok {
		c.size -= int64(len(el.Value.(*memoryItem).data))
		c.order.Remove(el)
		delete(c.items, sum)
	}
}

// MemoryCache is a ChunkCache in memory, least recently used out first.
type MemoryCache struct {
	mu    sync.Mutex
	max   int64
	size  int64
	order *list.List // front: most recent
	items map[digest.Digest]*list.Element
}

type memoryItem struct {
	sum  digest.Digest
	data []byte
}

// NewMemoryCache returns a cache holding up to maxBytes of chunk data.
func NewMemoryCache(maxBytes int64) *MemoryCache {
	return &MemoryCache{max: maxBytes, order: list.New(), items: make(map[digest.Digest]*list.Element)}
}

// Get implements ChunkCache.
func (c *MemoryCache) Get(sum digest.Digest) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[sum]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*memoryItem).data, true
}

// Has reports whether the cache holds a chunk, without reading it.
func (c *MemoryCache) Has(sum digest.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[sum]
	return ok
}

// Put implements ChunkCache.
func (c *MemoryCache) Put(sum digest.Digest, data []byte) {
	if int64(len(data)) > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[sum]; ok {
		return
	}
	c.items[sum] = c.order.PushFront(&memoryItem{sum: sum, data: data})
	c.size += int64(len(data))
	for c.size > c.max {
		el := c.order.Back()
		it := el.Value.(*memoryItem)
		c.order.Remove(el)
		delete(c.items, it.sum)
		c.size -= int64(len(it.data))
	}
}
