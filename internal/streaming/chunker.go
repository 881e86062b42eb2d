package streaming

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// chunkWriter receives the uncompressed tar stream in order (write), is told
// where to cut it into chunks (cut), compresses chunks in parallel and writes
// the frames to the output in order. It also hashes the uncompressed stream
// (DiffID) and the output (blob digest).
//
// Memory is bounded: pending holds at most hardMax bytes, and at most
// 2*workers chunks are in flight.
type chunkWriter struct {
	ctx     context.Context
	pending []byte
	start   int64 // uncompressed offset of pending[0]
	hardMax int

	jobs    chan *chunkJob // to the compressors
	ordered chan *chunkJob // to the writer, in stream order
	wg      sync.WaitGroup // compressors
	done    chan struct{}  // closed when the writer has finished
	bufs    sync.Pool

	// Owned by the writer goroutine until done is closed.
	sink    frameSink
	diff    hash.Hash
	err     error
	errOnce sync.Once
	failed  chan struct{} // closed on the first error
}

// chunkRecord is a Chunk as the converter keeps it until the TOC is
// written: a quarter of a Chunk's size (no digest string), which matters
// for a large layer's hundreds of thousands of chunks.
type chunkRecord struct {
	offset, size, uoffset, usize int64
	sum                          [sha256.Size]byte
}

func (c *chunkRecord) chunk() Chunk {
	return Chunk{Offset: c.offset, Size: c.size, UncompressedOffset: c.uoffset, UncompressedSize: c.usize,
		Digest: digest.NewDigestFromBytes(digest.SHA256, c.sum[:])}
}

type chunkJob struct {
	uoff  int64
	data  []byte
	frame []byte
	sum   [sha256.Size]byte
	ready chan struct{}
}

func newChunkWriter(ctx context.Context, out io.Writer, workers int, level zstd.EncoderLevel, hardMax int) (*chunkWriter, error) {
	cw := &chunkWriter{
		ctx: ctx, sink: frameSink{out: out, blob: sha256.New()}, hardMax: hardMax,
		jobs:    make(chan *chunkJob, workers),
		ordered: make(chan *chunkJob, 2*workers),
		done:    make(chan struct{}),
		failed:  make(chan struct{}),
		diff:    sha256.New(),
	}
	for range workers {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(true))
		if err != nil {
			return nil, err
		}
		cw.wg.Add(1)
		go cw.compress(enc)
	}
	go cw.writeFrames()
	return cw, nil
}

func (cw *chunkWriter) compress(enc *zstd.Encoder) {
	defer cw.wg.Done()
	defer enc.Close()
	for j := range cw.jobs {
		j.sum = sha256.Sum256(j.data)
		j.frame = enc.EncodeAll(j.data, cw.getBuf()[:0])
		close(j.ready)
	}
}

func (cw *chunkWriter) writeFrames() {
	defer close(cw.done)
	for j := range cw.ordered {
		<-j.ready
		if cw.firstErr() == nil {
			cw.writeFrame(j)
		}
		cw.putBuf(j.data)
		cw.putBuf(j.frame)
	}
}

func (cw *chunkWriter) writeFrame(j *chunkJob) {
	if err := cw.ctx.Err(); err != nil {
		cw.fail(err)
		return
	}
	if err := cw.sink.put(j.frame, j.uoff, int64(len(j.data)), j.sum); err != nil {
		cw.fail(err)
		return
	}
	cw.diff.Write(j.data)
}

// frameSink writes a layer's data frames in order, hashing the blob and
// recording each frame's chunk for the TOC.
type frameSink struct {
	out    io.Writer
	outN   int64
	blob   hash.Hash
	chunks []chunkRecord
}

// put writes one frame holding the usize uncompressed bytes at uoff, whose
// sha256 is sum.
func (s *frameSink) put(frame []byte, uoff, usize int64, sum [sha256.Size]byte) error {
	if _, err := s.out.Write(frame); err != nil {
		return fmt.Errorf("writing converted layer: %w", err)
	}
	s.blob.Write(frame)
	s.chunks = append(s.chunks, chunkRecord{offset: s.outN, size: int64(len(frame)), uoffset: uoff, usize: usize, sum: sum})
	s.outN += int64(len(frame))
	return nil
}

func (cw *chunkWriter) fail(err error) {
	cw.errOnce.Do(func() { cw.err = err; close(cw.failed) })
}

func (cw *chunkWriter) firstErr() error {
	select {
	case <-cw.failed:
		return cw.err
	default:
		return nil
	}
}

func (cw *chunkWriter) getBuf() []byte {
	if b, ok := cw.bufs.Get().(*[]byte); ok {
		return *b
	}
	return nil
}

func (cw *chunkWriter) putBuf(b []byte) {
	if cap(b) > 0 {
		cw.bufs.Put(&b)
	}
}

// pos is the uncompressed offset of the next byte written.
func (cw *chunkWriter) pos() int64 { return cw.start + int64(len(cw.pending)) }

// write appends uncompressed bytes, cutting where pending would exceed
// hardMax (only pathological input gets there: huge headers or sparse data).
func (cw *chunkWriter) write(p []byte) error {
	for len(p) > 0 {
		n := min(len(p), cw.hardMax-len(cw.pending))
		cw.pending = append(cw.pending, p[:n]...)
		p = p[n:]
		if len(cw.pending) >= cw.hardMax {
			if err := cw.cut(cw.pos()); err != nil {
				return err
			}
		}
	}
	return nil
}

// cut ends the current chunk at uncompressed offset at, which must lie in
// the pending bytes; bytes after it start the next chunk.
func (cw *chunkWriter) cut(at int64) error {
	n := int(at - cw.start)
	if n <= 0 {
		return nil
	}
	if n > len(cw.pending) {
		return fmt.Errorf("internal error: cut at %d beyond written %d", at, cw.pos())
	}
	// The pending buffer becomes the chunk; the few bytes after the cut
	// (headers of the next entry) move to a fresh buffer.
	data := cw.pending[:n]
	cw.pending = append(cw.getBuf()[:0], cw.pending[n:]...)
	j := &chunkJob{uoff: cw.start, data: data, ready: make(chan struct{})}
	cw.start = at
	select {
	case cw.ordered <- j:
	case <-cw.failed:
		return cw.err
	}
	cw.jobs <- j // never blocks for long: compressors always drain
	return nil
}

// close flushes the last chunk and waits for every frame to be written.
func (cw *chunkWriter) close() error {
	err := cw.cut(cw.pos())
	close(cw.jobs)
	close(cw.ordered)
	cw.wg.Wait()
	<-cw.done
	if err != nil {
		return err
	}
	return cw.firstErr()
}
