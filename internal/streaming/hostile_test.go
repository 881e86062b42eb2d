package streaming

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
)

// lyingTar is a tar whose only header claims more data than follows.
func lyingTar(t *testing.T) []byte {
	raw := buildTar(t, []testEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "a", Mode: 0644}, data: textData(10000)}})
	return raw[:512+5000]
}

func gzipZeros(t *testing.T, n int) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	chunk := make([]byte, 1<<20)
	for w := 0; w < n; w += len(chunk) {
		zw.Write(chunk[:min(len(chunk), n-w)])
	}
	zw.Close()
	return buf.Bytes()
}

func TestConvertRefusesHostileInput(t *testing.T) {
	raw := buildTar(t, manySmallFiles(50))
	gz := compress(t, CompressionGzip, raw)
	zst := compress(t, CompressionZstd, raw)
	corruptGz := bytes.Clone(gz)
	for i := len(corruptGz) / 3; i < len(corruptGz)/3+64; i++ {
		corruptGz[i] ^= 0x55
	}
	badChecksum := bytes.Clone(raw)
	badChecksum[100] ^= 0xff // inside the first header's mode field
	tests := []struct {
		name    string
		input   []byte
		opts    Options
		wantErr error
		wantMsg string
	}{
		{"truncated gzip", gz[:len(gz)/2], Options{}, ErrCorruptInput, "truncated"},
		{"gzip without its trailer", gz[:len(gz)-4], Options{}, ErrCorruptInput, ""},
		{"corrupt gzip", corruptGz, Options{}, ErrCorruptInput, ""},
		{"truncated zstd", zst[:len(zst)/2], Options{}, ErrCorruptInput, ""},
		{"tar shorter than its header says", lyingTar(t), Options{}, ErrCorruptInput, "truncated"},
		{"tar header with a bad checksum", badChecksum, Options{}, ErrCorruptInput, "header"},
		{"not a tar", []byte(strings.Repeat("hello world ", 100)), Options{}, ErrCorruptInput, ""},
		{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0, 1, 2}, Options{}, ErrUnsupportedInput, "xz"},
		{"too many entries", raw, Options{Limits: Limits{MaxEntries: 10}}, ErrLimitExceeded, "entries"},
		{"TOC too big for readers", raw, Options{Limits: Limits{MaxTOCUncompressedSize: 1000}}, ErrLimitExceeded, "TOC of more than 1,000 bytes of JSON"},
		{"larger than the absolute limit", gz, Options{Limits: Limits{MaxUncompressedSize: 64 << 10}}, ErrLimitExceeded, "decompresses to more"},
		{"decompression bomb", gzipZeros(t, 8<<20), Options{Limits: Limits{RatioGrace: 1 << 20, MaxRatio: 100}}, ErrLimitExceeded, "bomb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Convert(context.Background(), bytes.NewReader(tt.input), io.Discard, tt.opts)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Convert: %v, want %v containing %q", err, tt.wantErr, tt.wantMsg)
			}
		})
	}
}

// slowReader hands out a few bytes at a time and cancels its context after
// the first read.
type cancellingReader struct {
	r      io.Reader
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	c.cancel()
	return c.r.Read(p[:min(len(p), 4096)])
}

func TestConvertCancel(t *testing.T) {
	raw := buildTar(t, manySmallFiles(200))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t0 := time.Now()
	_, err := Convert(ctx, &cancellingReader{r: bytes.NewReader(raw), cancel: cancel}, io.Discard, smallOpts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Convert after cancel: %v, want context.Canceled", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}

type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestConvertWriteError(t *testing.T) {
	raw := buildTar(t, manySmallFiles(200))
	_, err := Convert(context.Background(), bytes.NewReader(raw), &failingWriter{n: 50000}, smallOpts)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Convert into a failing writer: %v", err)
	}
}

func TestConvertProgress(t *testing.T) {
	raw := buildTar(t, manySmallFiles(400))
	gz := compress(t, CompressionGzip, raw)
	var seen []int64
	opts := smallOpts
	opts.Progress = func(n int64) { seen = append(seen, n) }
	_, res := convertBytes(t, gz, opts)
	if len(seen) == 0 || seen[len(seen)-1] != int64(len(gz)) || res.SourceSize != int64(len(gz)) {
		t.Fatalf("progress %v, want it to end at the source size %d", seen, len(gz))
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("progress went backwards: %v", seen)
		}
	}
}

// TestChunkLayout checks the chunking rules: chunks end on entry boundaries
// once big enough, big files start their own chunk, large files are cut at
// fixed offsets from their start.
func TestChunkLayout(t *testing.T) {
	raw := buildTar(t, everyEntryType())
	blob, res := convertBytes(t, raw, smallOpts)
	r, _ := openBytes(t, blob, res)
	starts := map[int64]bool{}
	for _, c := range r.TOC().Chunks {
		starts[c.UncompressedOffset] = true
		if c.UncompressedSize > 2*(smallOpts.ChunkSize+smallOpts.FileChunkSize) {
			t.Errorf("chunk at %d holds %d bytes", c.UncompressedOffset, c.UncompressedSize)
		}
	}
	large, _ := r.Lookup("usr/bin/large") // 300 KiB > FileChunkSize 64 KiB
	for off := smallOpts.FileChunkSize; off < large.Size; off += smallOpts.FileChunkSize {
		if !starts[large.Offset+off] {
			t.Errorf("no chunk starts at offset %d of a large file", off)
		}
	}
	ctx := context.Background()
	cr := &countingRanges{rr: ReaderAtRanges(bytes.NewReader(blob))}
	r2, err := Open(ctx, cr, int64(len(blob)))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	e, _ := r2.Lookup("usr/bin/large")
	before, reqs := cr.bytes.Load(), cr.requests.Load()
	if _, err := r2.ReadAt(ctx, e, make([]byte, 4096), 2*smallOpts.FileChunkSize+100); err != nil {
		t.Fatal(err)
	}
	var piece int64
	for _, c := range r2.TOC().Chunks {
		if c.UncompressedOffset == e.Offset+2*smallOpts.FileChunkSize {
			piece = c.Size
		}
	}
	if got := cr.bytes.Load() - before; got != piece || cr.requests.Load()-reqs != 1 {
		t.Errorf("a 4 KiB read inside a large file fetched %d bytes in %d requests, want the one %d-byte chunk", got, cr.requests.Load()-reqs, piece)
	}
	before, reqs = cr.bytes.Load(), cr.requests.Load()
	if _, err := r2.ReadAt(ctx, e, make([]byte, e.Size), 0); err != nil {
		t.Fatal(err)
	}
	if cr.requests.Load()-reqs != 2 { // the chunks before and after the cached one
		t.Errorf("reading a whole large file took %d requests, want 2 (coalesced around the cached chunk)", cr.requests.Load()-reqs)
	}
	before = cr.bytes.Load()
	if _, err := r2.ReadAt(ctx, e, make([]byte, e.Size), 0); err != nil || cr.bytes.Load() != before {
		t.Errorf("a second read fetched %d bytes (%v), want 0 from the cache", cr.bytes.Load()-before, err)
	}
}
