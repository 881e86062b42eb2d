package streaming

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// tocWriter encodes the TOC while the tar is read: each entry is written
// as JSON, compressed, into a spill buffer as soon as it has been scanned,
// so the converter holds one entry at a time whatever the layer holds, and
// both TOC limits are checked as the TOC grows. The document is the TOC
// JSON of docs/format.md with the entries first: the chunk table, the
// DiffID and the size are known only at the end. JSON objects are
// unordered, so every reader reads it as before.
type tocWriter struct {
	lim     Limits
	spill   *spillBuffer  // the compressed JSON
	zw      *zstd.Encoder // writes into spill
	jsonN   int64         // JSON bytes written so far
	entries int
	err     error
}

// tocSpillMemory is how much of the compressed TOC stays in memory before
// it moves to a temporary file; tests lower tocSpillAt to spill small TOCs.
const tocSpillMemory = 4 << 20

var tocSpillAt int64 = tocSpillMemory

func newTOCWriter(lim Limits, tempDir string) (*tocWriter, error) {
	w := &tocWriter{lim: lim, spill: &spillBuffer{dir: tempDir, max: tocSpillAt}}
	// A 2 MiB window compresses a TOC within a few percent of the default
	// 8 MiB one (paths repeat their neighbours'), for a quarter of the
	// encoder's memory.
	zw, err := zstd.NewWriter(&frameCounter{w}, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true),
		zstd.WithWindowSize(2<<20))
	if err != nil {
		return nil, err
	}
	w.zw = zw
	w.write([]byte(`{"version":` + strconv.Itoa(formatMajor) + `,"entries":[`))
	return w, w.err
}

// frameCounter checks the compressed TOC's size as the encoder emits it.
type frameCounter struct{ w *tocWriter }

func (f *frameCounter) Write(p []byte) (int, error) {
	if skippableHeaderSize+f.w.spill.size+int64(len(p)) > f.w.lim.MaxTOCSize {
		return 0, overLimit(LimitTOCBytes, f.w.lim.MaxTOCSize, "has a TOC of more than %d bytes compressed", f.w.lim.MaxTOCSize)
	}
	return f.w.spill.Write(p)
}

func (w *tocWriter) write(b []byte) {
	if w.err != nil {
		return
	}
	if w.jsonN+int64(len(b)) > w.lim.MaxTOCUncompressedSize {
		w.err = overLimit(LimitTOCJSONBytes, w.lim.MaxTOCUncompressedSize, "has a TOC of more than %d bytes of JSON (after %d entries)", w.lim.MaxTOCUncompressedSize, w.entries)
		return
	}
	w.jsonN += int64(len(b))
	if _, err := w.zw.Write(b); err != nil {
		w.err = tocWriteError(err)
	}
}

func tocWriteError(err error) error {
	if _, ok := err.(*LimitError); ok {
		return err
	}
	return fmt.Errorf("writing the TOC: %w", err)
}

// add appends one entry.
func (w *tocWriter) add(e *Entry) error {
	js, err := json.Marshal(e.forJSON())
	if err != nil {
		return fmt.Errorf("encoding TOC entry %q: %w", e.Name, err)
	}
	if w.entries > 0 {
		w.write([]byte{','})
	}
	w.write(js)
	w.entries++
	return w.err
}

// finish writes the chunk table and the rest of the document, and returns
// the TOC frame: its skippable-frame header, then the compressed JSON. The
// caller closes the frame after reading it.
func (w *tocWriter) finish(chunks []chunkRecord, diffID digest.Digest, size int64) (*tocFrame, error) {
	w.write([]byte(`],"chunks":[`))
	for i := range chunks {
		if i > 0 {
			w.write([]byte{','})
		}
		js, err := json.Marshal(chunks[i].chunk())
		if err != nil {
			return nil, fmt.Errorf("encoding TOC chunk %d: %w", i, err)
		}
		w.write(js)
	}
	w.write([]byte(`],"diffID":` + strconv.Quote(diffID.String()) + `,"uncompressedSize":` + strconv.FormatInt(size, 10) + `}`))
	if w.err != nil {
		return nil, w.err
	}
	if err := w.zw.Close(); err != nil {
		return nil, tocWriteError(err)
	}
	payload, err := w.spill.reader()
	if err != nil {
		return nil, err
	}
	if w.spill.size > math.MaxUint32 {
		return nil, overLimit(LimitTOCBytes, w.lim.MaxTOCSize, "has a TOC of %d bytes compressed, more than a frame holds", w.spill.size)
	}
	header := make([]byte, skippableHeaderSize)
	binary.LittleEndian.PutUint32(header[0:], skippableTOCMagic)
	binary.LittleEndian.PutUint32(header[4:], uint32(w.spill.size))
	return &tocFrame{header: header, payload: payload, size: skippableHeaderSize + w.spill.size, jsonSize: w.jsonN}, nil
}

// close releases the spill file.
func (w *tocWriter) close() {
	w.zw.Close()
	w.spill.close()
}

// tocFrame is an encoded TOC frame, read once.
type tocFrame struct {
	header   []byte
	payload  io.Reader
	size     int64
	jsonSize int64
}

// writeTo copies the frame to out and returns its sha256.
func (f *tocFrame) writeTo(out io.Writer) ([sha256.Size]byte, error) {
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), io.MultiReader(bytes.NewReader(f.header), f.payload))
	if err == nil && n != f.size {
		err = fmt.Errorf("internal error: TOC frame of %d bytes, %d copied", f.size, n)
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum, err
}

// spillBuffer keeps what is written in memory up to max bytes, then moves
// it to a temporary file in dir (os.TempDir when empty), removed on close.
// Written here because neither the standard library nor a dependency has
// one: bytes.Buffer only grows in memory, and os.CreateTemp alone would
// make a file of every small layer's TOC.
type spillBuffer struct {
	dir  string
	max  int64
	mem  bytes.Buffer
	file *os.File
	size int64
}

func (s *spillBuffer) Write(p []byte) (int, error) {
	if s.file == nil && s.size+int64(len(p)) > s.max {
		f, err := os.CreateTemp(s.dir, "sluice-toc-*")
		if err != nil {
			return 0, fmt.Errorf("spilling the TOC to a temporary file: %w", err)
		}
		// Removed at once: the open file is all that is needed, and a
		// crash leaves nothing behind.
		_ = os.Remove(f.Name())
		s.file = f
		if _, err := f.Write(s.mem.Bytes()); err != nil {
			return 0, fmt.Errorf("spilling the TOC to %s: %w", f.Name(), err)
		}
		s.mem = bytes.Buffer{}
	}
	var n int
	var err error
	if s.file != nil {
		n, err = s.file.Write(p)
		if err != nil {
			err = fmt.Errorf("spilling the TOC to %s: %w", s.file.Name(), err)
		}
	} else {
		n, err = s.mem.Write(p)
	}
	s.size += int64(n)
	return n, err
}

// reader returns the bytes written, from the start.
func (s *spillBuffer) reader() (io.Reader, error) {
	if s.file == nil {
		return bytes.NewReader(s.mem.Bytes()), nil
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("reading the TOC back from %s: %w", s.file.Name(), err)
	}
	return io.LimitReader(s.file, s.size), nil
}

func (s *spillBuffer) close() {
	if s.file != nil {
		s.file.Close()
	}
	s.mem = bytes.Buffer{}
}
