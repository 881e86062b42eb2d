package streaming

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestChunksOfAndChunkAt maps reads to the chunks they need and finds
// chunks by their place in the blob.
func TestChunksOfAndChunkAt(t *testing.T) {
	raw := buildTar(t, everyEntryType())
	blob, res := convertBytes(t, raw, smallOpts)
	cache := NewMemoryCache(16 << 20)
	r, _ := openBytes(t, blob, res, WithChunkCache(cache))
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
	p := make([]byte, 10)
	if _, err := r.ReadAt(ctx, large, p, fcs-5); err != nil {
		t.Fatal(err)
	}
	if !r.Cached(two[0]) || !r.Cached(two[1]) {
		t.Fatal("the chunks a read needed are not cached")
	}
}

// TestClaimSupplyRelease: a read of a claimed chunk waits for the claimer
// and fetches nothing itself, unless the claim is released or the frame
// supplied is bad.
func TestClaimSupplyRelease(t *testing.T) {
	raw := buildTar(t, everyEntryType())
	blob, res := convertBytes(t, raw, smallOpts)
	r, cr := openBytes(t, blob, res, WithChunkCache(NewMemoryCache(16<<20)))
	ctx := context.Background()
	large, _ := r.Lookup("usr/bin/large")
	want := raw[large.Offset : large.Offset+large.Size]
	fcs := smallOpts.FileChunkSize
	chunks := r.TOC().Chunks
	frame := func(i int) []byte {
		c := chunks[i]
		return slices.Clone(blob[c.Offset : c.Offset+c.Size])
	}

	// readChunk reads the first bytes of the file's k-th file chunk in the
	// background.
	readChunk := func(k int64) <-chan error {
		off := k * fcs
		done := make(chan error, 1)
		go func() {
			p := make([]byte, 16)
			_, err := r.ReadAt(ctx, large, p, off)
			if err == nil && !bytes.Equal(p, want[off:off+16]) {
				err = fmt.Errorf("read %q, want %q", p, want[off:off+16])
			}
			done <- err
		}()
		return done
	}

	for k, mode := range []string{"supply", "release", "bad frame"} {
		k := int64(k + 1)
		i := r.ChunksOf(large, k*fcs, 1)[0]
		if got := r.Claim([]int{i, i}); len(got) != 1 || got[0] != i {
			t.Fatalf("%s: Claim(%d) = %v", mode, i, got)
		}
		if got := r.Claim([]int{i}); len(got) != 0 {
			t.Fatalf("%s: a claimed chunk claimed again: %v", mode, got)
		}
		before := cr.requests.Load()
		done := readChunk(k)
		select {
		case err := <-done:
			t.Fatalf("%s: a read of a claimed chunk did not wait: %v", mode, err)
		case <-time.After(50 * time.Millisecond):
		}
		switch mode {
		case "supply":
			if err := r.Supply(i, frame(i)); err != nil {
				t.Fatal(err)
			}
		case "release":
			r.Release([]int{i})
		case "bad frame":
			bad := frame(i)
			bad[len(bad)/2] ^= 0xff
			if err := r.Supply(i, bad); !errors.Is(err, ErrChunkVerification) {
				t.Fatalf("a damaged frame supplied: %v", err)
			}
		}
		if err := <-done; err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		wantRequests := int64(1)
		if mode == "supply" {
			wantRequests = 0
		}
		if n := cr.requests.Load() - before; n != wantRequests {
			t.Errorf("%s: the read made %d requests, want %d", mode, n, wantRequests)
		}
		if !r.Cached(i) {
			t.Errorf("%s: chunk not cached after the read", mode)
		}
		if got := r.Claim([]int{i}); len(got) != 0 {
			t.Errorf("%s: a cached chunk claimed: %v", mode, got)
		}
	}
}

// TestFetchAllAfterReleasedClaim: a claim released while FetchAll waits for
// it is fetched by FetchAll itself, and the layer still hashes to its
// DiffID (the retry once reused FetchAll's own list of chunks, hashing
// them out of order: a good layer reported bad).
func TestFetchAllAfterReleasedClaim(t *testing.T) {
	raw := buildTar(t, everyEntryType())
	blob, res := convertBytes(t, raw, smallOpts)
	r, _ := openBytes(t, blob, res, WithChunkCache(NewMemoryCache(16<<20)))
	last := len(r.TOC().Chunks) - 1
	if got := r.Claim([]int{last}); len(got) != 1 {
		t.Fatalf("Claim(%d) = %v", last, got)
	}
	// Released once the read waits for it.
	r.waiting = func(i int) {
		if i == last {
			go r.Release([]int{last})
		}
	}
	var out bytes.Buffer
	if err := r.WriteTo(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), raw) {
		t.Fatal("the layer read back differs from the tar")
	}
}
