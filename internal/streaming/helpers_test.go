package streaming

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// testEntry is one entry of a generated layer.
type testEntry struct {
	hdr  tar.Header
	data []byte
}

// smallOpts chunk generated layers finely so that small inputs still span
// many chunks and split large files.
var smallOpts = Options{ChunkSize: 16 << 10, FileChunkSize: 64 << 10, Concurrency: 2}

// randomData is incompressible; textData compresses.
func randomData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func textData(n int) []byte {
	var sb strings.Builder
	for i := 0; sb.Len() < n; i++ {
		sb.WriteString("line ")
		sb.WriteString(strings.Repeat("x", i%50))
		sb.WriteString("\n")
	}
	return []byte(sb.String()[:n])
}

// everyEntryType is a layer using every tar feature the converter must keep.
func everyEntryType() []testEntry {
	mt := time.Unix(1700000000, 0)
	pax := map[string]string{
		"SCHILY.xattr.security.capability": string([]byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}),
		"SCHILY.xattr.user.comment":        "hello",
	}
	longName := "usr/share/" + strings.Repeat("very-long-directory-name/", 8) + "file.txt"
	gnuLong := "usr/lib/" + strings.Repeat("gnu-long-name-", 10) + "lib.so"
	return []testEntry{
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0755, ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "usr/", Mode: 0755, ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "usr/bin/", Mode: 0755, ModTime: mt, Uname: "root", Gname: "root"}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/empty", Mode: 0644, ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/one", Mode: 04755, ModTime: mt}, data: []byte{'x'}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/block", Mode: 0644, ModTime: mt}, data: textData(512)},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/4k", Mode: 0644, ModTime: mt, Uid: 1000, Gid: 1000, Uname: "user", Gname: "users"}, data: randomData(1, 4096)},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/text", Mode: 0644, ModTime: mt}, data: textData(100 << 10)},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/large", Mode: 0755, ModTime: mt}, data: randomData(2, 300<<10+123)},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/exact", Mode: 0755, ModTime: mt}, data: randomData(3, 128<<10)},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/ping", Mode: 0755, ModTime: mt, PAXRecords: pax, Format: tar.FormatPAX}, data: textData(3000)},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "usr/bin/python", Linkname: "python3.11", ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "bin", Linkname: "usr/bin", ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "usr/bin/4k-link", Linkname: "usr/bin/4k", ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "usr/bin/4k-link2", Linkname: "./usr/bin/4k-link", ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "dev/", Mode: 0755, ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0666, Devmajor: 1, Devminor: 3, ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/sda", Mode: 0660, Devmajor: 8, Devminor: 0, ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0600, ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: longName, Mode: 0644, ModTime: mt, Format: tar.FormatPAX}, data: textData(700)},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: gnuLong, Mode: 0644, ModTime: mt, Format: tar.FormatGNU}, data: textData(900)},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "usr/lib/long-link", Linkname: "/" + gnuLong, ModTime: mt, Format: tar.FormatGNU}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/.wh.hostname", ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "var/.wh..wh..opq", ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "times/old", Mode: 0644, ModTime: time.Unix(-1000000000, 0), Format: tar.FormatPAX}, data: []byte("old")},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "times/future", Mode: 0644, ModTime: time.Unix(1<<34, 0), Format: tar.FormatPAX}, data: []byte("future")},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "times/nanos", Mode: 0644, ModTime: time.Unix(1700000000, 123456789), Format: tar.FormatPAX}, data: []byte("nanos")},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "ids/big", Mode: 0644, Uid: 1 << 30, Gid: 1<<30 + 1, ModTime: mt, Format: tar.FormatPAX}, data: []byte("ids")},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "../escape", Mode: 0644, ModTime: mt}, data: []byte("evil")},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "/abs/path", Mode: 0644, ModTime: mt}, data: []byte("abs")},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "link-out", Linkname: "../escape", ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "dup", Mode: 0644, ModTime: mt}, data: []byte("first")},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "dup", Mode: 0600, ModTime: mt}, data: []byte("second")},
	}
}

// manySmallFiles is a layer of n files of mixed sizes.
func manySmallFiles(n int) []testEntry {
	var es []testEntry
	for i := range n {
		size := (i * 7919) % (20 << 10)
		es = append(es, testEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "f/" + strings.Repeat("n", i%7) + string(rune('a'+i%26)) + "-" + itoa(i),
			Mode: 0644, ModTime: time.Unix(int64(i), 0)}, data: append(textData(size/2), randomData(uint64(i), size-size/2)...)})
	}
	return es
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

func buildTar(t testing.TB, entries []testEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.data))
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("writing header %q: %v", h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compress(t testing.TB, c Compression, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch c {
	case CompressionNone:
		return raw
	case CompressionGzip:
		zw := gzip.NewWriter(&buf)
		zw.Write(raw)
		zw.Close()
	case CompressionZstd:
		zw, _ := zstd.NewWriter(&buf)
		zw.Write(raw)
		zw.Close()
	}
	return buf.Bytes()
}

// convertBytes converts an in-memory layer.
func convertBytes(t testing.TB, src []byte, opts Options) ([]byte, *Result) {
	t.Helper()
	var out bytes.Buffer
	res, err := Convert(context.Background(), bytes.NewReader(src), &out, opts)
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	if int64(out.Len()) != res.Size {
		t.Fatalf("wrote %d bytes, result says %d", out.Len(), res.Size)
	}
	return out.Bytes(), res
}

// countingRanges counts the bytes and requests a Reader makes.
type countingRanges struct {
	rr       RangeReader
	bytes    atomic.Int64
	requests atomic.Int64
}

func (c *countingRanges) ReadRange(ctx context.Context, p []byte, off int64) error {
	c.bytes.Add(int64(len(p)))
	c.requests.Add(1)
	return c.rr.ReadRange(ctx, p, off)
}

func openBytes(t testing.TB, blob []byte, res *Result, opts ...ReaderOption) (*Reader, *countingRanges) {
	t.Helper()
	cr := &countingRanges{rr: ReaderAtRanges(bytes.NewReader(blob))}
	if res != nil {
		opts = append(opts, WithTOC(res.TOCDigest, res.TOCOffset, res.TOCSize), WithDiffID(res.DiffID))
	}
	r, err := Open(context.Background(), cr, int64(len(blob)), opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r, cr
}

// zstdCLI decompresses with the zstd command when it is installed.
func zstdCLI(t testing.TB, blob []byte) ([]byte, bool) {
	t.Helper()
	if _, err := exec.LookPath("zstd"); err != nil {
		return nil, false
	}
	cmd := exec.Command("zstd", "-d", "-c", "-q")
	cmd.Stdin = bytes.NewReader(blob)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("zstd -d: %v", err)
	}
	return out, true
}

func readAll(t testing.TB, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
