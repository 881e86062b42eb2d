package chunkcache

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func chunk(i, size int) ([]byte, digest.Digest) {
	b := bytes.Repeat([]byte(fmt.Sprintf("%08d", i)), size/8)
	return b, digest.FromBytes(b)
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, 3*1024)
	if err != nil {
		t.Fatal(err)
	}
	var sums []digest.Digest
	for i := range 3 {
		b, s := chunk(i, 1024)
		c.Put(s, b)
		sums = append(sums, s)
	}
	c.Flush()
	// Touch chunk 0 so chunk 1 is the least recently used.
	if _, ok := c.Get(sums[0]); !ok {
		t.Fatal("chunk 0 missing")
	}
	b, s := chunk(3, 1024)
	c.Put(s, b)
	c.Flush()
	if _, ok := c.Get(sums[1]); ok {
		t.Fatal("least recently used chunk not evicted")
	}
	for _, keep := range []digest.Digest{sums[0], sums[2], s} {
		if _, ok := c.Get(keep); !ok {
			t.Fatalf("chunk %s evicted", keep)
		}
	}
	if st := c.Stats(); st.Size > 3*1024 || st.Evictions != 1 {
		t.Fatalf("stats %+v", st)
	}
	// A restart finds the chunks again.
	c.Close()
	c2, err := Open(dir, 3*1024)
	if err != nil {
		t.Fatal(err)
	}
	if st := c2.Stats(); st.Chunks != 3 || st.Size != 3*1024 {
		t.Fatalf("after reopen: %+v", st)
	}
	// Shrinking the bound evicts at open.
	c3, err := Open(dir, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if st := c3.Stats(); st.Chunks != 1 {
		t.Fatalf("after reopen smaller: %+v", st)
	}
}

func TestCacheRefusesDamagedChunks(t *testing.T) {
	c, err := Open(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	b, s := chunk(7, 4096)
	c.Put(s, b)
	c.Flush()
	c.memory.Remove(s) // read it back from disk
	if err := os.WriteFile(c.path(s), append([]byte("x"), b[1:]...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get(s); ok {
		t.Fatal("tampered chunk served")
	}
	if st := c.Stats(); st.Corrupts != 1 || st.Chunks != 0 {
		t.Fatalf("stats %+v", st)
	}
	c.Put(s, b)
	c.Flush()
	c.Remove([]digest.Digest{s})
	if _, ok := c.Get(s); ok {
		t.Fatal("removed chunk served")
	}
}

// A chunk larger than the whole disk cache is kept in memory, so that the
// reads of a file it holds do not fetch it again each time.
func TestChunkLargerThanTheCacheStaysInMemory(t *testing.T) {
	c, err := Open(t.TempDir(), 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big, sum := chunk(1, 4096)
	c.Put(sum, big)
	c.Flush()
	if st := c.Stats(); st.Size != 0 || st.Chunks != 0 {
		t.Fatalf("a chunk larger than the cache went to disk: %+v", st)
	}
	got, ok := c.Get(sum)
	if !ok || !bytes.Equal(got, big) {
		t.Fatal("a chunk larger than the disk cache is not kept in memory")
	}
	if !c.Has(sum) {
		t.Error("Has does not see a chunk held in memory")
	}
}

// clock is a clock the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestDiskWritesWaitForAPause(t *testing.T) {
	const delay = time.Second
	clk := &clock{now: time.Unix(1700000000, 0)}
	c, err := OpenWith(t.TempDir(), 1<<20, Options{WriteDelay: delay, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sums []digest.Digest
	for i := range 3 {
		b, s := chunk(i, 1024)
		c.Put(s, b)
		sums = append(sums, s)
		clk.advance(delay / 3) // puts closer together than the delay
	}
	if n := c.Stats().Chunks; n != 0 {
		t.Fatalf("%d chunks on disk while puts keep coming", n)
	}
	for _, s := range sums {
		if _, ok := c.Get(s); !ok {
			t.Fatal("a queued chunk is not served from memory")
		}
	}
	// The last put was delay/3 ago: still no write.
	clk.advance(delay / 3)
	if n := c.Stats().Chunks; n != 0 {
		t.Fatalf("%d chunks on disk %v after the last put", n, 2*delay/3)
	}
	clk.advance(delay)
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Chunks < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 chunks on disk after the puts paused", c.Stats().Chunks)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Flush does not wait for a pause.
	b, s := chunk(9, 1024)
	c.Put(s, b)
	c.Flush()
	if n := c.Stats().Chunks; n != 4 {
		t.Fatalf("%d chunks on disk after Flush, want 4", n)
	}
}

// TestQueuedBytesAreBounded: chunks waiting for the disk are held outside
// the memory front's bound, so the writes start, pause or not, once they
// reach a quarter of it.
func TestQueuedBytesAreBounded(t *testing.T) {
	c, err := OpenWith(t.TempDir(), 1<<20, Options{MemoryBytes: 8 << 10, WriteDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 3 {
		b, s := chunk(i, 1024)
		c.Put(s, b)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().Chunks == 0 {
		if time.Now().After(deadline) {
			t.Fatal("3 KiB queued against an 8 KiB memory front, and nothing written")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWaitRoomKeepsEveryChunk puts chunks as a layer's background
// completion does, waiting for room before each batch: none is dropped,
// though writes wait for a pause in puts and the queue holds a few chunks.
func TestWaitRoomKeepsEveryChunk(t *testing.T) {
	c, err := OpenWith(t.TempDir(), 1<<30, Options{MemoryBytes: 16 << 10, WriteDelay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 64
	for i := range n {
		if err := c.WaitRoom(context.Background(), 2048); err != nil {
			t.Fatal(err)
		}
		b, s := chunk(i, 2048)
		c.Put(s, b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Chunks < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d chunks on disk", c.Stats().Chunks, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 8 {
		b, s := chunk(1000+i, 2048)
		c.Put(s, b) // no pause in puts: nothing written, the queue fills
	}
	if err := c.WaitRoom(ctx, 8<<10); err == nil && c.queued.Load() > c.maxQueued-8<<10 {
		t.Fatal("WaitRoom returned with the queue full")
	}
}

func TestPreloadBringsADiskChunkIntoMemory(t *testing.T) {
	c, err := Open(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	good, goodSum := chunk(1, 4096)
	bad, badSum := chunk(2, 4096)
	_, absent := chunk(3, 4096)
	c.Put(goodSum, good)
	c.Put(badSum, bad)
	c.Flush()
	c.memory.Remove(goodSum)
	c.memory.Remove(badSum)
	if err := os.WriteFile(c.path(badSum), append([]byte("x"), bad[1:]...), 0o600); err != nil {
		t.Fatal(err)
	}

	c.Preload(goodSum)
	c.Preload(badSum)
	c.Preload(absent)
	c.Close() // waits for the preloads

	if !c.memory.Has(goodSum) {
		t.Error("a chunk on disk is not in memory after Preload")
	}
	if c.memory.Has(badSum) || c.Has(badSum) {
		t.Error("a damaged chunk was preloaded or kept")
	}
	st := c.Stats()
	if st.Preloaded != 1 || st.Corrupts != 1 {
		t.Errorf("stats %+v: want 1 preloaded, 1 corrupt", st)
	}
	if st.Hits != 0 || st.Misses != 0 {
		t.Errorf("Preload counted as reads: %+v", st)
	}
	// After Close, Preload does nothing.
	c.memory.Remove(goodSum)
	c.Preload(goodSum)
	if c.memory.Has(goodSum) {
		t.Error("Preload ran after Close")
	}
}
