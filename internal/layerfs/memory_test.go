package layerfs

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/streaming"
	"github.com/sluicehq/sluice/internal/testenv"
)

// tocMemoryEntries is how many entries TestTOCLoadMemory's layer has:
// SLUICE_TOC_MEMORY_ENTRIES, else 200,000 (the node's limit,
// limits.maxEntries, is 1,048,576 by default; the test's figures are per
// entry, and a run at the limit takes half a minute).
func tocMemoryEntries(t *testing.T) int {
	if s := os.Getenv("SLUICE_TOC_MEMORY_ENTRIES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("SLUICE_TOC_MEMORY_ENTRIES=%q: want a positive number", s)
		}
		return n
	}
	return 200_000
}

// maxHeapPerEntry and maxPeakPerEntry are the node's stated bounds on what
// a layer's TOC costs in memory once loaded and indexed for its mount
// (retained), and at most while it loads (peak), per entry, for entries
// named as packages name their files (docs/security.md).
const (
	maxHeapPerEntry = 400
	maxPeakPerEntry = 1200
)

// TestTOCLoadMemory converts a layer of many empty files (named as a
// distribution's packages name theirs: usr/share/<pkg>/<dir>/<file>),
// then loads its TOC as the FUSE manager does (streaming.Open) and indexes
// it for a mount (Build), and reports the heap it took: retained after
// both, and at most while they ran, per entry and against the TOC's own
// size (stored and as JSON).
func TestTOCLoadMemory(t *testing.T) {
	n := tocMemoryEntries(t)
	blob, err := os.CreateTemp(t.TempDir(), "layer")
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		mtime := time.Unix(1700000000, 0)
		for i := range n {
			name := fmt.Sprintf("usr/share/pkg-%05d/doc/file-%04d.txt", i/200, i%200)
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Uname: "root", Gname: "root", ModTime: mtime}); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(tw.Close())
	}()
	res, err := streaming.Convert(context.Background(), pr, blob, streaming.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := blob.Stat()
	if err != nil {
		t.Fatal(err)
	}
	tail := make([]byte, streaming.FooterSize)
	if _, err := blob.ReadAt(tail, st.Size()-streaming.FooterSize); err != nil {
		t.Fatal(err)
	}
	footer, err := streaming.ParseFooter(tail, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	jsonSize := footer.TOCUncompressedSize

	base := heapInUse()
	peak := watchHeap()
	r, err := streaming.Open(context.Background(), streaming.ReaderAtRanges(blob), st.Size(),
		streaming.WithTOC(res.TOCDigest, res.TOCOffset, res.TOCSize), streaming.WithChunkCache(streaming.NewMemoryCache(1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	root, err := Build(r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range root.meta.dir.sorted() { // a listing of every directory, as a find would make
		if d.dir != nil {
			d.dir.sorted()
		}
	}
	high := peak.Done()
	held := heapInUse()
	if p := os.Getenv("SLUICE_TOC_MEMORY_PROFILE"); p != "" {
		writeHeapProfile(t, p)
	}
	runtime.KeepAlive(root)
	runtime.KeepAlive(r)

	perEntry := float64(held-base) / float64(n)
	peakPerEntry := float64(high-base) / float64(n)
	t.Logf("%d entries: TOC %d bytes stored (%.1f per entry), %d as JSON (%.1f per entry)",
		n, res.TOCSize, float64(res.TOCSize)/float64(n), jsonSize, float64(jsonSize)/float64(n))
	t.Logf("loaded and indexed: %.1f MiB held (%.0f bytes per entry, %.1fx the JSON), peak %.1f MiB (%.0f per entry)",
		float64(held-base)/(1<<20), perEntry, float64(held-base)/float64(jsonSize), float64(high-base)/(1<<20), peakPerEntry)
	if perEntry > maxHeapPerEntry {
		t.Errorf("a loaded TOC holds %.0f bytes per entry, more than the stated %d", perEntry, maxHeapPerEntry)
	}
	if peakPerEntry > maxPeakPerEntry {
		t.Errorf("loading a TOC peaks at %.0f bytes per entry, more than the stated %d", peakPerEntry, maxPeakPerEntry)
	}
}

// writeHeapProfile writes the heap's profile to path, for go tool pprof.
func writeHeapProfile(t *testing.T, path string) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// watchHeap samples the heap in use until Done (a sample every few
// milliseconds: short spikes may be missed).
func watchHeap() *testenv.HeapWatch {
	return testenv.WatchHeap(2 * time.Millisecond)
}
