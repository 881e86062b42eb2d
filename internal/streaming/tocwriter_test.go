package streaming

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// encodeTOC returns, for tests that craft TOCs, the TOC frame (skippable-frame header and zstd-compressed
// JSON) and the size of the JSON.
func encodeTOC(toc *TOC) (frame []byte, jsonSize int64, err error) {
	js, err := json.Marshal(toc)
	if err != nil {
		return nil, 0, fmt.Errorf("encoding TOC: %w", err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
	if err != nil {
		return nil, 0, err
	}
	defer enc.Close()
	return skippableFrame(skippableTOCMagic, enc.EncodeAll(js, nil)), int64(len(js)), nil
}

// TestTOCSpillsToAFile converts a layer whose TOC moves to a temporary
// file almost at once: the blob must be byte for byte the one converted
// with the TOC in memory, the reader must read it, and the file must be
// gone.
func TestTOCSpillsToAFile(t *testing.T) {
	raw := buildTar(t, append(everyEntryType(), manySmallFiles(300)...))
	inMemory, res := convertBytes(t, raw, smallOpts)
	tmp := t.TempDir()
	defer func(at int64) { tocSpillAt = at }(tocSpillAt)
	tocSpillAt = 1 << 10
	opts := smallOpts
	opts.TempDir = tmp
	spilled, res2 := convertBytes(t, raw, opts)
	if res.TOCSize <= tocSpillAt {
		t.Fatalf("the TOC is %d bytes: too small to spill", res.TOCSize)
	}
	if !bytes.Equal(inMemory, spilled) || res.Digest != res2.Digest || res.TOCSize != res2.TOCSize {
		t.Fatalf("spilling the TOC changed the blob: %s, %s in memory", res2.Digest, res.Digest)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("the TOC's temporary file is left behind: %v", left)
	}
	r, _ := openBytes(t, spilled, res2)
	if got, want := len(r.TOC().Entries), res.Entries; got != want || want != len(everyEntryType())+300 {
		t.Fatalf("the reader read %d entries, the converter wrote %d", got, want)
	}
	if r.TOC().DiffID != res.DiffID || len(r.TOC().Chunks) != res.Chunks {
		t.Fatalf("TOC diffID %s with %d chunks, converted %s with %d", r.TOC().DiffID, len(r.TOC().Chunks), res.DiffID, res.Chunks)
	}
}

// TestTOCSpillFileError: a TOC that cannot spill fails the conversion
// with the reason.
func TestTOCSpillFileError(t *testing.T) {
	defer func(at int64) { tocSpillAt = at }(tocSpillAt)
	tocSpillAt = 1 << 10
	opts := smallOpts
	opts.TempDir = t.TempDir() + "/missing"
	_, err := Convert(t.Context(), bytes.NewReader(buildTar(t, manySmallFiles(300))), new(bytes.Buffer), opts)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("spilling the TOC to a temporary file")) {
		t.Fatalf("Convert with a missing TempDir: %v, want the spill's error", err)
	}
}
