package streaming

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// splitBytes splits an in-memory layer, keeping the files keepName picks.
func splitBytes(t *testing.T, r *Reader, keepName func(string) bool) ([]byte, *Result, bool) {
	t.Helper()
	var keep []*Entry
	for i := range r.Entries() {
		if e := &r.Entries()[i]; keepName(e.Name) {
			keep = append(keep, e)
		}
	}
	var out bytes.Buffer
	res, err := Split(context.Background(), r, &out, keep, Options{})
	if err != nil {
		t.Fatalf("Split: %v", err)
	}
	if !NeedsSplit(r, keep) {
		if res.Size != r.size || !bytes.Equal(out.Bytes()[:res.TOCOffset], rawData(t, r)) {
			t.Fatalf("Split of a layer that needs no cut changed its frames")
		}
		return out.Bytes(), res, false
	}
	if res.Digest != digest.FromBytes(out.Bytes()) || res.Size != int64(out.Len()) {
		t.Fatalf("result %s (%d bytes), blob is %s (%d bytes)", res.Digest, res.Size, digest.FromBytes(out.Bytes()), out.Len())
	}
	return out.Bytes(), res, true
}

// rawData is the data frames of the layer r reads, as stored.
func rawData(t *testing.T, r *Reader) []byte {
	t.Helper()
	b := make([]byte, r.footer.TOCOffset)
	if err := r.rr.ReadRange(context.Background(), b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSplitKeepsTheLayerAndSeparatesKeptFiles(t *testing.T) {
	entries := append(everyEntryType(), manySmallFiles(300)...)
	raw := buildTar(t, entries)
	blob, res := convertBytes(t, raw, smallOpts)
	r, _ := openBytes(t, blob, res)
	// Every seventh file, and a hard link whose data is another entry's.
	keepName := func(name string) bool {
		return len(name) > 2 && name[len(name)-1]%7 == 0 || name == "usr/bin/4k-link"
	}
	split, sres, changed := splitBytes(t, r, keepName)
	if !changed {
		t.Fatal("Split found nothing to cut in a layer mixing kept and other files")
	}
	if sres.DiffID != res.DiffID || sres.UncompressedSize != res.UncompressedSize || sres.Entries != res.Entries {
		t.Fatalf("split result %+v, layer %+v", sres, res)
	}
	if sres.Chunks <= res.Chunks {
		t.Fatalf("%d chunks after the split, %d before", sres.Chunks, res.Chunks)
	}
	sr := checkLayer(t, split, sres, raw, 2)

	// No chunk holds data of a kept file and of another one.
	kept := map[int]bool{}
	for i := range sr.Entries() {
		if e := &sr.Entries()[i]; keepName(e.Name) {
			kept[sr.DataEntry(e).Index()] = true
		}
	}
	for ci, c := range sr.TOC().Chunks {
		var holds []bool
		for i := range sr.Entries() {
			e := &sr.Entries()[i]
			if e.Type == TypeReg && e.DataSize() > 0 && e.Offset < c.UncompressedOffset+c.UncompressedSize &&
				e.Offset+e.DataSize() > c.UncompressedOffset {
				holds = append(holds, kept[i])
			}
		}
		for _, k := range holds {
			if k != holds[0] {
				t.Fatalf("chunk %d holds data of kept files and of others", ci)
			}
		}
	}

	// A cut falls where a file's data blocks end: the next entry's
	// headers start there.
	boundary, oldStart := map[int64]bool{}, map[int64]bool{}
	for i := range r.Entries() {
		if e := &r.Entries()[i]; e.Type == TypeReg && e.DataSize() > 0 {
			boundary[e.Offset+alignBlock(e.DataSize())] = true
		}
	}
	for _, c := range r.TOC().Chunks {
		oldStart[c.UncompressedOffset] = true
	}
	for _, c := range sr.TOC().Chunks {
		if !oldStart[c.UncompressedOffset] && !boundary[c.UncompressedOffset] {
			t.Fatalf("a chunk starts at %d, not at an entry's headers", c.UncompressedOffset)
		}
	}

	// The chunks that needed no cut are copied frame for frame.
	before := map[digest.Digest][]byte{}
	for _, c := range r.TOC().Chunks {
		before[c.Digest] = blob[c.Offset : c.Offset+c.Size]
	}
	copied := 0
	for _, c := range sr.TOC().Chunks {
		if f, ok := before[c.Digest]; ok {
			if !bytes.Equal(f, split[c.Offset:c.Offset+c.Size]) {
				t.Fatalf("chunk %s was compressed again, not copied", c.Digest)
			}
			copied++
		}
	}
	if copied == 0 || copied == len(sr.TOC().Chunks) {
		t.Fatalf("%d of %d chunks copied", copied, len(sr.TOC().Chunks))
	}

	// Splitting again for the same files changes nothing: a conversion
	// retried after a crash makes the same blob.
	if _, _, changed := splitBytes(t, sr, keepName); changed {
		t.Fatal("a second split for the same files cut chunks again")
	}
}

func TestSplitNothingToCut(t *testing.T) {
	raw := buildTar(t, manySmallFiles(100))
	blob, res := convertBytes(t, raw, smallOpts)
	r, _ := openBytes(t, blob, res)
	for name, keep := range map[string]func(string) bool{
		"no file":    func(string) bool { return false },
		"every file": func(string) bool { return true },
	} {
		out, _, changed := splitBytes(t, r, keep)
		if changed {
			t.Errorf("keeping %s: Split cut chunks", name)
		}
		// The TOC is written again entry by entry: the same bytes.
		if !bytes.Equal(out, blob) {
			t.Errorf("keeping %s: Split of a layer that needs no cut made another blob", name)
		}
	}
}

// A kept file in chunks of its own needs no cut, even when a directory's
// header lies between it and the file before.
func TestSplitNoCutBetweenChunks(t *testing.T) {
	mt := time.Unix(1700000000, 0)
	raw := buildTar(t, []testEntry{
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "u", Mode: 0o644, ModTime: mt}, data: textData(3000)},
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755, ModTime: mt}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "d/k", Mode: 0o644, ModTime: mt}, data: randomData(3, 40<<10)},
	})
	blob, res := convertBytes(t, raw, smallOpts)
	r, _ := openBytes(t, blob, res)
	k, err := r.Lookup("d/k")
	if err != nil {
		t.Fatal(err)
	}
	if NeedsSplit(r, []*Entry{k}) {
		t.Fatalf("a split is asked for chunks %+v, where no chunk holds both files", r.TOC().Chunks)
	}
}

func TestSplitRefusesACorruptChunk(t *testing.T) {
	raw := buildTar(t, manySmallFiles(100))
	blob, res := convertBytes(t, raw, smallOpts)
	r, _ := openBytes(t, blob, res)
	// Corrupt the frame of every chunk: the ones that must be cut are
	// decoded and checked.
	bad := bytes.Clone(blob)
	for _, c := range r.TOC().Chunks {
		bad[c.Offset+c.Size/2] ^= 0xff
	}
	br, _ := openBytes(t, bad, nil)
	var keep []*Entry
	for i := range br.Entries() {
		if i%5 == 0 {
			keep = append(keep, &br.Entries()[i])
		}
	}
	_, err := Split(context.Background(), br, &bytes.Buffer{}, keep, Options{})
	if !errors.Is(err, ErrChunkVerification) {
		t.Fatalf("Split of a corrupt layer: %v, want %v", err, ErrChunkVerification)
	}
}

// TestSplitManyBatches splits a layer whose frames take several of the
// batches Split reads at once, its buffer reused from one to the next.
func TestSplitManyBatches(t *testing.T) {
	mt := time.Unix(1700000000, 0)
	var entries []testEntry
	for i := range 1500 { // 12 MB that does not compress
		entries = append(entries, testEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "f/" + itoa(i), Mode: 0o644, ModTime: mt},
			data: randomData(uint64(i), 8<<10)})
	}
	raw := buildTar(t, entries)
	blob, res := convertBytes(t, raw, smallOpts)
	if res.Size <= fetchAllBatchBytes {
		t.Fatalf("a layer of %d bytes fits in one batch", res.Size)
	}
	r, _ := openBytes(t, blob, res)
	split, sres, changed := splitBytes(t, r, func(name string) bool { return name[len(name)-1]%3 == 0 })
	if !changed {
		t.Fatal("nothing to cut")
	}
	checkLayer(t, split, sres, raw, 3)
}
