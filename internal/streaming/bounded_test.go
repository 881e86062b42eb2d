package streaming

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/sluicehq/sluice/internal/testenv"
)

// layerGen writes a generated layer into a pipe, so that a layer of
// hundreds of megabytes costs the test no memory of its own.
func layerGen(t testing.TB, write func(tw *tar.Writer) error) io.Reader {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := write(tw)
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	t.Cleanup(func() { pr.CloseWithError(io.ErrClosedPipe) })
	return pr
}

var genTime = time.Unix(1700000000, 0)

// nestedDirs is a layer of n directories, each inside the one before:
// d/, d/d/, d/d/d/, ... (names past 100 bytes go in PAX headers).
func nestedDirs(t testing.TB, n int) io.Reader {
	return layerGen(t, func(tw *tar.Writer) error {
		var name strings.Builder
		for range n {
			name.WriteString("d/")
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name.String(), Mode: 0755,
				ModTime: genTime, Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
		return nil
	})
}

// emptyFiles is a layer of n empty files spread over directories of 1,000.
func emptyFiles(t testing.TB, n int) io.Reader {
	return layerGen(t, func(tw *tar.Writer) error {
		for i := range n {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("d%04d/f%06d", i/1000, i),
				Mode: 0644, ModTime: genTime}); err != nil {
				return err
			}
		}
		return nil
	})
}

// watchHeap samples the heap in use until Done (a sample every few
// milliseconds: short spikes may be missed).
func watchHeap() *testenv.HeapWatch {
	runtime.GC()
	return testenv.WatchHeap(5 * time.Millisecond)
}

// countingReader counts the bytes the converter took from its source.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestHostileLayersStayWithinBudget converts layers made to blow up the
// TOC (20,000 nested directories: 400 MB of names; 500,000 empty files)
// and checks the converter's heap stays within its memory plan and the
// default budget while it does.
func TestHostileLayersStayWithinBudget(t *testing.T) {
	levels, files := 20000, 500000
	if raceEnabled { // the race detector makes the tar's bytes ten times slower
		levels, files = 6000, 100000
	}
	tests := []struct {
		name    string
		layer   func() io.Reader
		limits  Limits
		entries int
	}{
		// The paths grow to 40,000 bytes: within limits only once
		// maxPathBytes allows them.
		{"nested directories", func() io.Reader { return nestedDirs(t, levels) }, Limits{MaxPathBytes: 2 * levels}, levels},
		{"empty files", func() io.Reader { return emptyFiles(t, files) }, Limits{}, files},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := os.Create(filepath.Join(t.TempDir(), "layer"))
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			opts := Options{Limits: tt.limits, TempDir: t.TempDir()}
			plan := planMemory(opts.withDefaults(), CompressionNone)
			h := watchHeap()
			t0 := time.Now()
			res, err := Convert(context.Background(), tt.layer(), out, opts)
			peak := h.Done()
			if err != nil {
				t.Fatalf("Convert: %v", err)
			}
			t.Logf("%d entries in %v, TOC %d bytes (%d of JSON); peak HeapInuse %d MiB, plan %d MiB (%d compressors)",
				res.Entries, time.Since(t0), res.TOCSize, tocJSONSize(t, out, res), peak>>20, plan.total()>>20, plan.compressors)
			if res.Entries != tt.entries {
				t.Errorf("%d entries, want %d", res.Entries, tt.entries)
			}
			if peak > uint64(plan.total()) || peak > DefaultMemoryBudget {
				t.Errorf("peak HeapInuse %d MiB, more than the plan's %d MiB or the default budget's %d MiB",
					peak>>20, plan.total()>>20, DefaultMemoryBudget>>20)
			}
		})
	}
}

// tocJSONSize reads the footer of a converted layer.
func tocJSONSize(t *testing.T, f *os.File, res *Result) int64 {
	t.Helper()
	b := make([]byte, FooterSize)
	if _, err := f.ReadAt(b, res.Size-FooterSize); err != nil {
		t.Fatal(err)
	}
	footer, err := ParseFooter(b, res.Size)
	if err != nil {
		t.Fatal(err)
	}
	if footer.TOCOffset != res.TOCOffset || footer.TOCSize != res.TOCSize {
		t.Fatalf("footer places the TOC at %d+%d, the result at %d+%d", footer.TOCOffset, footer.TOCSize, res.TOCOffset, res.TOCSize)
	}
	return footer.TOCUncompressedSize
}

// TestOverLimitLayersFailFast converts, for each limit, a layer that
// crosses it early and would go on for long after: the conversion must
// fail with the limit named, having read little past the point where the
// layer crossed it.
func TestOverLimitLayersFailFast(t *testing.T) {
	tests := []struct {
		name      string
		layer     func() io.Reader
		limits    Limits
		wantLimit string
		wantMsg   string
		// maxRead bounds the source bytes read before the refusal.
		maxRead int64
	}{
		{"entries", func() io.Reader { return emptyFiles(t, 5_000_000) }, Limits{MaxEntries: 10_000},
			LimitEntries, "has more than 10,000 entries", 10_000*512 + 1<<20},
		{"path bytes", func() io.Reader { return nestedDirs(t, 20000) }, Limits{},
			LimitPathBytes, "whose name is 3,841 bytes long, more than 3,840", 8 << 20},
		{"link target bytes", func() io.Reader {
			return afterFiles(t, 1000, &tar.Header{Typeflag: tar.TypeSymlink, Name: "link", Linkname: strings.Repeat("../", 1400)})
		}, Limits{}, LimitPathBytes, "whose link target is 4,200 bytes long, more than 4,095", 1000*512 + 1<<20},
		{"name bytes", func() io.Reader {
			return afterFiles(t, 1000, &tar.Header{Typeflag: tar.TypeReg, Name: "etc/" + strings.Repeat("n", 256) + "/x"})
		}, Limits{}, LimitNameBytes, "has a 256-byte element, more than 255", 1000*512 + 1<<20},
		{"TOC bytes", func() io.Reader { return emptyFiles(t, 5_000_000) }, Limits{MaxTOCSize: 64 << 10},
			LimitTOCBytes, "TOC of more than 65,536 bytes compressed", 40 << 20},
		{"TOC JSON bytes", func() io.Reader { return emptyFiles(t, 5_000_000) }, Limits{MaxTOCUncompressedSize: 1 << 20},
			LimitTOCJSONBytes, "TOC of more than 1,048,576 bytes of JSON", 20_000*512 + 1<<20},
		{"uncompressed bytes", func() io.Reader { return zeroFile(t, 1<<40, false) }, Limits{MaxUncompressedSize: 64 << 20},
			LimitUncompressedBytes, "has a file of 1,099,511,627,776 bytes, more than 67,108,864", 1 << 20},
		{"expansion ratio", func() io.Reader { return zeroFile(t, 32<<30, true) }, Limits{MaxRatio: 100, RatioGrace: 8 << 20},
			LimitExpansionRatio, "expands more than 100 times", 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &countingReader{r: tt.layer()}
			t0 := time.Now()
			_, err := Convert(context.Background(), src, io.Discard, Options{Limits: tt.limits, TempDir: t.TempDir()})
			elapsed := time.Since(t0)
			var le *LimitError
			if !errors.As(err, &le) || !errors.Is(err, ErrLimitExceeded) {
				t.Fatalf("Convert: %v, want a LimitError", err)
			}
			if le.Limit != tt.wantLimit || !strings.Contains(le.Problem, tt.wantMsg) || !strings.Contains(err.Error(), "(limit "+tt.wantLimit+")") {
				t.Fatalf("Convert: %v (limit %s), want the limit %s and %q", err, le.Limit, tt.wantLimit, tt.wantMsg)
			}
			t.Logf("refused after %v and %d source bytes: %v", elapsed, src.n.Load(), err)
			if n := src.n.Load(); n > tt.maxRead {
				t.Errorf("read %d source bytes before refusing, want at most %d", n, tt.maxRead)
			}
		})
	}
}

// afterFiles is a layer of n empty files, then last, then files without
// end.
func afterFiles(t testing.TB, n int, last *tar.Header) io.Reader {
	return layerGen(t, func(tw *tar.Writer) error {
		for i := 0; ; i++ {
			h := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("f%07d", i), Mode: 0644, ModTime: genTime}
			if i == n {
				h = last
				h.ModTime, h.Format = genTime, tar.FormatPAX
			}
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
		}
	})
}

// zeroFile is a layer holding one file of size zero bytes, gzipped if
// compressed (a decompression bomb).
func zeroFile(t testing.TB, size int64, compressed bool) io.Reader {
	write := func(w io.Writer) error {
		tw := tar.NewWriter(w)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "zeros", Size: size, Mode: 0644, ModTime: genTime}); err != nil {
			return err
		}
		zeros := make([]byte, 1<<20)
		for {
			if _, err := tw.Write(zeros); err != nil {
				return err
			}
		}
	}
	pr, pw := io.Pipe()
	go func() {
		if !compressed {
			pw.CloseWithError(write(pw))
			return
		}
		zw, _ := gzip.NewWriterLevel(pw, gzip.BestCompression)
		pw.CloseWithError(write(zw))
	}()
	t.Cleanup(func() { pr.CloseWithError(io.ErrClosedPipe) })
	return pr
}

// TestMemoryPlan: the compressors fit the budget next to the fixed
// needs; a zstd source's window leaves room for fewer.
func TestMemoryPlan(t *testing.T) {
	o := Options{Concurrency: 16}.withDefaults()
	gz, zst := planMemory(o, CompressionGzip), planMemory(o, CompressionZstd)
	t.Logf("gzip: %d compressors, %d MiB; zstd: %d, %d MiB", gz.compressors, gz.total()>>20, zst.compressors, zst.total()>>20)
	if gz.compressors < 2 || gz.compressors >= 16 || gz.total() > DefaultMemoryBudget {
		t.Errorf("a gzip source under the default budget: %d compressors, %d MiB", gz.compressors, gz.total()>>20)
	}
	if zst.compressors >= gz.compressors {
		t.Errorf("a zstd source gets %d compressors, a gzip one %d: its window is not counted", zst.compressors, gz.compressors)
	}
	o.MemoryBudget = 1 << 30
	if big := planMemory(o, CompressionGzip); big.compressors <= gz.compressors || big.total() > o.MemoryBudget {
		t.Errorf("a 1 GiB budget: %d compressors, %d MiB", big.compressors, big.total()>>20)
	}
	o.MemoryBudget = 1
	if tiny := planMemory(o, CompressionGzip); tiny.compressors != 1 {
		t.Errorf("a budget below the fixed needs: %d compressors, want 1", tiny.compressors)
	}
}

// TestZstdWindowOverBudget: a zstd layer whose window the budget cannot
// hold is refused with the budget named; a larger budget converts it.
func TestZstdWindowOverBudget(t *testing.T) {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zstd.WithWindowSize(128<<20))
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(buildTar(t, manySmallFiles(20)))
	zw.Close()
	_, err = Convert(t.Context(), bytes.NewReader(buf.Bytes()), io.Discard, Options{})
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != LimitConversionMemory || !strings.Contains(err.Error(), "zstd window of more than 67,108,864 bytes") {
		t.Fatalf("Convert of a layer with a 128 MiB zstd window: %v, want a refusal naming %s", err, LimitConversionMemory)
	}
	if _, err := Convert(t.Context(), bytes.NewReader(buf.Bytes()), io.Discard, Options{MemoryBudget: 512 << 20}); err != nil {
		t.Fatalf("Convert with a 512 MiB budget: %v", err)
	}
}

// TestFetchAllOfZerosStaysBounded reads a layer of one file of zeros
// through FetchAll, as a node's background fetch does. Its chunks take a
// few hundred bytes each in the blob: batched by their compressed size
// alone, 8 MiB of them decoded 8 GiB at once.
func TestFetchAllOfZerosStaysBounded(t *testing.T) {
	const size = 1 << 30
	src := layerGen(t, func(tw *tar.Writer) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "zeros", Size: size, Mode: 0o644, ModTime: genTime}); err != nil {
			return err
		}
		_, err := io.CopyN(tw, zeroReader{}, size)
		return err
	})
	var blob bytes.Buffer
	res, err := Convert(context.Background(), src, &blob, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := openBytes(t, blob.Bytes(), res)
	heap := watchHeap()
	var n int64
	err = r.FetchAll(context.Background(), func(c *Chunk, data []byte) error {
		n += int64(len(data))
		return nil
	})
	peak := heap.Done()
	t.Logf("%d MiB of zeros in %d chunks, %d KiB stored: FetchAll's peak heap %d MiB", size>>20, len(r.TOC().Chunks), blob.Len()>>10, peak>>20)
	if err != nil || n != r.TOC().UncompressedSize {
		t.Fatalf("FetchAll: %v, %d bytes of %d", err, n, r.TOC().UncompressedSize)
	}
	if limit := uint64(blob.Len()) + 256<<20; peak > limit {
		t.Errorf("FetchAll held %d MiB of heap at once, more than %d MiB", peak>>20, limit>>20)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
