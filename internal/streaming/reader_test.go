package streaming

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// rewriteTOC returns blob with its TOC changed by edit (and a footer that
// matches), as a hostile or buggy converter could write it.
func rewriteTOC(t *testing.T, blob []byte, edit func(*TOC)) []byte {
	t.Helper()
	f, err := ParseFooter(blob[len(blob)-FooterSize:], int64(len(blob)))
	if err != nil {
		t.Fatal(err)
	}
	toc, err := DecodeTOC(blob[f.TOCOffset:f.TOCOffset+f.TOCSize], f.TOCOffset, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	edit(toc)
	frame, n, err := encodeTOC(toc)
	if err != nil {
		t.Fatal(err)
	}
	nf := Footer{TOCOffset: f.TOCOffset, TOCSize: int64(len(frame)), TOCUncompressedSize: n, TOCDigest: sha256.Sum256(frame), Major: 1}
	footer, _ := nf.MarshalBinary()
	return append(append(bytes.Clone(blob[:f.TOCOffset]), frame...), footer...)
}

func TestOpenRefusesBadBlobs(t *testing.T) {
	raw := buildTar(t, everyEntryType())
	blob, res := convertBytes(t, raw, smallOpts)
	withTOC := WithTOC(res.TOCDigest, res.TOCOffset, res.TOCSize)
	flip := func(off int64) []byte { b := bytes.Clone(blob); b[off] ^= 1; return b }
	tests := []struct {
		name    string
		blob    []byte
		opts    []ReaderOption
		wantErr error
	}{
		{"too small", blob[:10], nil, ErrInvalidFormat},
		{"no footer", raw, nil, ErrInvalidFormat},
		{"truncated", blob[:len(blob)-1], nil, ErrInvalidFormat},
		{"corrupt TOC, footer digest", flip(res.TOCOffset + 20), nil, ErrTOCVerification},
		{"corrupt TOC, descriptor digest", flip(res.TOCOffset + 20), []ReaderOption{withTOC}, ErrTOCVerification},
		{"wrong TOC digest", blob, []ReaderOption{WithTOC(digest.FromString("x"), res.TOCOffset, res.TOCSize)}, ErrTOCVerification},
		{"TOC annotations off by one", blob, []ReaderOption{WithTOC(res.TOCDigest, res.TOCOffset+1, res.TOCSize)}, ErrInvalidFormat},
		{"TOC over the limit", blob, []ReaderOption{WithLimits(Limits{MaxTOCSize: 100})}, ErrLimitExceeded},
		{"wrong DiffID", blob, []ReaderOption{WithDiffID(digest.FromString("other"))}, ErrDiffIDMismatch},
		{"future major version", append(bytes.Clone(blob[:len(blob)-16]), append([]byte{2, 0, 0, 0, 0, 0, 0, 0}, footerMagic...)...), nil, ErrUnsupportedVersion},
		{"chunks not contiguous", rewriteTOC(t, blob, func(toc *TOC) { toc.Chunks[1].Offset++ }), nil, ErrInvalidFormat},
		{"chunk beyond the data", rewriteTOC(t, blob, func(toc *TOC) { toc.Chunks[len(toc.Chunks)-1].Size += 10 }), nil, ErrInvalidFormat},
		{"entry data beyond the tar", rewriteTOC(t, blob, func(toc *TOC) { toc.Entries[5].Offset = toc.UncompressedSize }), nil, ErrInvalidFormat},
		{"unflagged escaping name", rewriteTOC(t, blob, func(toc *TOC) { toc.Entries[3].Name = "../../etc/passwd" }), nil, ErrInvalidFormat},
		{"dangling hard link", rewriteTOC(t, blob, func(toc *TOC) { toc.Entries[13].LinkName = "nowhere" }), nil, ErrInvalidFormat},
		{"too many entries", blob, []ReaderOption{WithLimits(Limits{MaxEntries: 3})}, ErrLimitExceeded},
		{"huge chunk", rewriteTOC(t, blob, func(toc *TOC) { toc.Chunks[0].UncompressedSize = 1 << 40 }), nil, ErrInvalidFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Open(context.Background(), ReaderAtRanges(bytes.NewReader(tt.blob)), int64(len(tt.blob)), tt.opts...)
			if err == nil {
				r.Close()
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestReadRefusesCorruptChunks(t *testing.T) {
	raw := buildTar(t, everyEntryType())
	blob, res := convertBytes(t, raw, smallOpts)
	r, _ := openBytes(t, blob, res)
	e, _ := r.Lookup("usr/bin/text")
	c := r.TOC().Chunks[r.chunkAt(e.Offset)]
	corrupt := bytes.Clone(blob)
	corrupt[c.Offset+c.Size/2] ^= 0x40
	swapped := rewriteTOC(t, blob, func(toc *TOC) {
		i := r.chunkAt(e.Offset)
		toc.Chunks[i].Digest = digest.FromString("not this chunk")
	})
	for name, b := range map[string][]byte{"flipped byte": corrupt, "wrong sha256 in TOC": swapped} {
		t.Run(name, func(t *testing.T) {
			r, _ := openBytes(t, b, nil)
			e, _ := r.Lookup("usr/bin/text")
			p := make([]byte, 100)
			n, err := r.ReadAt(context.Background(), e, p, 10)
			if !errors.Is(err, ErrChunkVerification) || n != 0 {
				t.Fatalf("ReadAt of a corrupt chunk: %d, %v; want 0, ErrChunkVerification", n, err)
			}
			if err := r.FetchAll(context.Background(), nil); !errors.Is(err, ErrChunkVerification) {
				t.Fatalf("FetchAll: %v, want ErrChunkVerification", err)
			}
		})
	}
}

func TestFetchAllChecksDiffID(t *testing.T) {
	raw := buildTar(t, manySmallFiles(40))
	blob, _ := convertBytes(t, raw, smallOpts)
	lying := rewriteTOC(t, blob, func(toc *TOC) { toc.DiffID = digest.FromString("something else") })
	r, _ := openBytes(t, lying, nil)
	if err := r.WriteTo(context.Background(), io.Discard); !errors.Is(err, ErrDiffIDMismatch) {
		t.Fatalf("WriteTo of a layer whose TOC lies about its DiffID: %v", err)
	}
	r, _ = openBytes(t, blob, nil)
	var n int64
	err := r.FetchAll(context.Background(), func(c *Chunk, data []byte) error { n += int64(len(data)); return nil })
	if err != nil || n != int64(len(raw)) {
		t.Fatalf("FetchAll: %v, %d bytes of %d", err, n, len(raw))
	}
}

// multiRanges records ReadRanges calls.
type multiRanges struct {
	countingRanges
	calls int
}

func (m *multiRanges) ReadRanges(ctx context.Context, ranges []Range, bufs [][]byte) error {
	m.calls++
	for i, rg := range ranges {
		if err := m.ReadRange(ctx, bufs[i], rg.Offset); err != nil {
			return err
		}
	}
	return nil
}

func TestMultiRangeAndCache(t *testing.T) {
	raw := buildTar(t, everyEntryType())
	blob, res := convertBytes(t, raw, smallOpts)
	mr := &multiRanges{countingRanges: countingRanges{rr: ReaderAtRanges(bytes.NewReader(blob))}}
	cache := NewMemoryCache(1 << 20)
	ctx := context.Background()
	r, err := Open(ctx, mr, res.Size, WithChunkCache(cache), WithTOC(res.TOCDigest, res.TOCOffset, res.TOCSize))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	e, _ := r.Lookup("usr/bin/large")
	p := make([]byte, 3*smallOpts.FileChunkSize)
	// Prime the cache with the middle chunk so the read needs two ranges.
	if _, err := r.ReadAt(ctx, e, p[:10], smallOpts.FileChunkSize); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(ctx, e, p, 0); err != nil {
		t.Fatal(err)
	}
	if mr.calls != 1 {
		t.Errorf("ReadRanges called %d times, want 1 multi-range call", mr.calls)
	}
	// A second Reader sharing the cache fetches nothing for the same bytes.
	r2, _ := openBytes(t, blob, res, WithChunkCache(cache), WithVerifyCache())
	cr := r2.rr.(*countingRanges)
	before := cr.bytes.Load()
	e2, _ := r2.Lookup("usr/bin/large")
	if _, err := r2.ReadAt(ctx, e2, p, 0); err != nil || cr.bytes.Load() != before {
		t.Errorf("read through a shared cache fetched %d bytes (%v)", cr.bytes.Load()-before, err)
	}
}

func TestReadAtEdges(t *testing.T) {
	raw := buildTar(t, everyEntryType())
	blob, res := convertBytes(t, raw, smallOpts)
	r, _ := openBytes(t, blob, res)
	ctx := context.Background()
	one, _ := r.Lookup("usr/bin/one")
	dir, _ := r.Lookup("usr/bin")
	empty, _ := r.Lookup("usr/bin/empty")
	tests := []struct {
		name    string
		e       *Entry
		off     int64
		n       int
		wantN   int
		wantErr string
	}{
		{"past the end", one, 5, 10, 0, "EOF"},
		{"short read at the end", one, 0, 10, 1, "EOF"},
		{"exact", one, 0, 1, 1, ""},
		{"empty file", empty, 0, 10, 0, "EOF"},
		{"negative offset", one, -1, 1, 0, "negative"},
		{"a directory", dir, 0, 1, 0, "no content"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := r.ReadAt(ctx, tt.e, make([]byte, tt.n), tt.off)
			if n != tt.wantN || (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("ReadAt = %d, %v; want %d, %q", n, err, tt.wantN, tt.wantErr)
			}
		})
	}
}

func TestConcurrentReadsShareFetches(t *testing.T) {
	raw := buildTar(t, everyEntryType())
	blob, res := convertBytes(t, raw, smallOpts)
	r, _ := openBytes(t, blob, res)
	ctx := context.Background()
	e, _ := r.Lookup("usr/bin/large")
	i := r.chunkAt(e.Offset)

	// Two reads of one chunk: the first fetches, the second waits for it.
	mine, waits := r.begin([]int{i}, chunkFetching)
	mine2, waits2 := r.begin([]int{i}, chunkFetching)
	if len(mine) != 1 || len(waits) != 0 || len(mine2) != 0 || waits2[i] == nil {
		t.Fatalf("claims: %v %v / %v %v", mine, waits, mine2, waits2)
	}
	got := map[int][]byte{}
	err := r.fetch(ctx, mine, got)
	r.endFetches(mine, got, err)
	<-waits2[i].done
	if waits2[i].state != chunkVerified || !bytes.Equal(waits2[i].data, got[i]) {
		t.Fatalf("waiter got a %s chunk: %v", waits2[i].state, waits2[i].err)
	}

	// Many readers at once (run with -race) all read the right bytes.
	r2, _ := openBytes(t, blob, res)
	want := make([]byte, e.Size)
	r.ReadAt(ctx, e, want, 0)
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			p := make([]byte, 5000)
			off := int64(g) * 30000
			_, err := r2.ReadAt(ctx, e, p, off)
			if err == nil && !bytes.Equal(p, want[off:off+5000]) {
				err = errors.New("wrong bytes")
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestLargeTOCReportsFirstBadEntry: the entries of a large TOC are checked
// in parts at once; the error still names the first bad entry.
func TestLargeTOCReportsFirstBadEntry(t *testing.T) {
	var entries []testEntry
	for i := range 12000 {
		entries = append(entries, testEntry{hdr: tar.Header{Name: fmt.Sprintf("d%02d/f%05d", i%50, i), Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte{byte(i)}})
	}
	blob, res := convertBytes(t, buildTar(t, entries), smallOpts)
	r, _ := openBytes(t, blob, res)
	if n := len(r.Entries()); n < 12000 {
		t.Fatalf("%d entries", n)
	}
	for _, bad := range [][]int{{11000}, {3000, 11000}, {7000, 100}} {
		b := rewriteTOC(t, blob, func(toc *TOC) {
			for _, i := range bad {
				toc.Entries[i].Mode = 0o170000
			}
		})
		_, err := Open(context.Background(), ReaderAtRanges(bytes.NewReader(b)), int64(len(b)))
		first := slices.Min(bad)
		if !errors.Is(err, ErrInvalidFormat) || !strings.Contains(err.Error(), fmt.Sprintf("(entry %d ", first)) {
			t.Errorf("entries %v bad: %v, want an error naming entry %d", bad, err, first)
		}
	}
}

// preloadRecorder is a memory cache that records what a Reader asks it to
// preload.
type preloadRecorder struct {
	*MemoryCache
	mu    sync.Mutex
	asked []digest.Digest
}

func (p *preloadRecorder) Preload(sum digest.Digest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked = append(p.asked, sum)
}

func (p *preloadRecorder) take() []digest.Digest {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.asked
	p.asked = nil
	return a
}

func TestReadAheadAsksForTheNextChunks(t *testing.T) {
	raw := buildTar(t, everyEntryType())
	blob, res := convertBytes(t, raw, smallOpts)
	cache := &preloadRecorder{MemoryCache: NewMemoryCache(1 << 20)}
	r, cr := openBytes(t, blob, res, WithChunkCache(cache))
	ctx := context.Background()
	e, _ := r.Lookup("usr/bin/large")
	first := r.ChunksOf(e, 0, 1)[0] + 1 // a chunk inside the file
	chunks := r.TOC().Chunks
	c := &chunks[first]
	start := c.UncompressedOffset - e.Offset // the file's offset where that chunk starts

	// A read in the first half of a chunk asks for nothing.
	if _, err := r.ReadAt(ctx, e, make([]byte, 100), start); err != nil {
		t.Fatal(err)
	}
	if got := cache.take(); len(got) != 0 {
		t.Fatalf("a read in the first half of a chunk asked to preload %v", got)
	}
	// A read reaching its second half asks for the next two chunks, and
	// fetches only its own.
	before := cr.bytes.Load()
	half := start + c.UncompressedSize/2
	if _, err := r.ReadAt(ctx, e, make([]byte, 4096), half); err != nil {
		t.Fatal(err)
	}
	want := []digest.Digest{chunks[first+1].Digest, chunks[first+2].Digest}
	if got := cache.take(); !slices.Equal(got, want) {
		t.Fatalf("preloads asked %v, want the next two chunks %v", got, want)
	}
	if cr.bytes.Load() != before {
		t.Errorf("the read fetched %d bytes for a chunk it had", cr.bytes.Load()-before)
	}
	// Nothing past the file's end: its last chunk asks for nothing.
	end := r.ChunksOf(e, e.Size-1, 1)[0]
	if c := &chunks[end]; end+1 >= len(chunks) || e.Offset+e.Size-c.UncompressedOffset < c.UncompressedSize/2 {
		t.Fatalf("the test wants a chunk after the file's last, and the file's end in the second half of it")
	}
	if _, err := r.ReadAt(ctx, e, make([]byte, 1), e.Size-1); err != nil {
		t.Fatal(err)
	}
	if got := cache.take(); len(got) != 0 {
		t.Fatalf("a read at the end of the file (chunk %d of %d) asked to preload %v", end, len(chunks), got)
	}
}
