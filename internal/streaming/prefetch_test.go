package streaming

import (
	"context"
	"testing"
)

// TestChunksOfAndPrefetch maps reads to the chunks they need, finds chunks
// by their place in the blob, and prefetches chunks so that reads of them
// then fetch nothing.
func TestChunksOfAndPrefetch(t *testing.T) {
	raw := buildTar(t, everyEntryType())
	blob, res := convertBytes(t, raw, smallOpts)
	cache := NewMemoryCache(16 << 20)
	r, cr := openBytes(t, blob, res, WithChunkCache(cache))
	ctx := context.Background()
	large, _ := r.Lookup("usr/bin/large")
	fcs := smallOpts.FileChunkSize

	first := r.ChunksOf(large, 0, 10)
	two := r.ChunksOf(large, fcs-5, 10)
	if len(first) != 1 || len(two) != 2 || two[0] != first[0] || two[1] != first[0]+1 {
		t.Fatalf("ChunksOf: a read inside the first file chunk needs %v, one across two %v", first, two)
	}
	if got := r.ChunksOf(large, large.Size-1, 100); len(got) != 1 {
		t.Errorf("a read past the end is clipped to the file: %v", got)
	}
	for _, bad := range [][2]int64{{-1, 1}, {large.Size, 1}} {
		if got := r.ChunksOf(large, bad[0], int(bad[1])); got != nil {
			t.Errorf("ChunksOf(%d, %d) = %v, want none", bad[0], bad[1], got)
		}
	}
	if dir, _ := r.Lookup("usr/bin"); r.ChunksOf(dir, 0, 1) != nil {
		t.Error("a directory needs chunks")
	}

	chunks := r.TOC().Chunks
	for _, i := range []int{0, first[0], len(chunks) - 1} {
		if got, ok := r.ChunkAt(chunks[i].Offset, chunks[i].Size); !ok || got != i {
			t.Errorf("ChunkAt(chunk %d) = %d, %v", i, got, ok)
		}
	}
	if _, ok := r.ChunkAt(chunks[1].Offset+1, chunks[1].Size); ok {
		t.Error("ChunkAt found a chunk where none starts")
	}
	if _, ok := r.ChunkAt(chunks[1].Offset, chunks[1].Size+1); ok {
		t.Error("ChunkAt found a chunk of another size")
	}

	if r.Cached(two[0]) || r.Cached(two[1]) {
		t.Fatal("chunks cached before anything was read")
	}
	before := cr.requests.Load()
	if err := r.Prefetch(ctx, two); err != nil {
		t.Fatal(err)
	}
	if n := cr.requests.Load() - before; n != 1 {
		t.Errorf("prefetching two adjacent chunks took %d requests, want 1", n)
	}
	if !r.Cached(two[0]) || !r.Cached(two[1]) {
		t.Fatal("prefetched chunks are not cached")
	}
	before = cr.requests.Load()
	p := make([]byte, 10)
	if _, err := r.ReadAt(ctx, large, p, fcs-5); err != nil {
		t.Fatal(err)
	}
	if err := r.Prefetch(ctx, two); err != nil {
		t.Fatal(err)
	}
	if n := cr.requests.Load() - before; n != 0 {
		t.Errorf("reading and prefetching cached chunks made %d requests", n)
	}
	if err := r.Prefetch(ctx, []int{len(chunks)}); err == nil {
		t.Error("prefetching a chunk the layer lacks is not an error")
	}
}
