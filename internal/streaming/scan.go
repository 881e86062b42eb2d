package streaming

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// teeReader hands every byte the tar reader consumes to the chunk writer, so
// the output holds exactly the input's bytes, and can also capture the raw
// header bytes of the current entry.
type teeReader struct {
	r       io.Reader
	cw      *chunkWriter
	capture []byte
	capOn   bool
}

const maxHeaderBytes = 4 << 20

func (t *teeReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if werr := t.cw.write(p[:n]); werr != nil {
		return n, werr
	}
	if t.capOn {
		if len(t.capture)+n > maxHeaderBytes {
			return n, fmt.Errorf("%w: tar headers of one entry exceed %d bytes", ErrLimitExceeded, maxHeaderBytes)
		}
		t.capture = append(t.capture, p[:n]...)
	}
	return n, err
}

// scanner walks the tar stream, recording entries and telling the chunk
// writer where to cut.
type scanner struct {
	opts        Options
	cw          *chunkWriter
	tee         *teeReader
	toc         *tocWriter
	tree        *unpackCheck
	entries     int
	unsafeNames []string
	buf         []byte
	// captureStart and boundary are the tar offsets where the capture of
	// the current entry's headers started and where its headers start.
	captureStart, boundary int64
}

const blockSize = 512

func alignBlock(n int64) int64 { return (n + blockSize - 1) &^ (blockSize - 1) }

func (s *scanner) run() error {
	tr := tar.NewReader(s.tee)
	s.buf = make([]byte, 256<<10)
	for {
		boundary := alignBlock(s.cw.pos())
		s.captureStart, s.boundary = s.cw.pos(), boundary
		s.tee.capture, s.tee.capOn = s.tee.capture[:0], true
		hdr, err := tr.Next()
		s.tee.capOn = false
		if err == io.EOF {
			break
		}
		if err != nil {
			return tarError("reading tar header", err)
		}
		if err := s.entry(tr, hdr, boundary); err != nil {
			return err
		}
	}
	// The end-of-archive blocks and any padding after them are part of the
	// layer's bytes too.
	for {
		_, err := s.tee.Read(s.buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return tarError("reading the end of the tar", err)
		}
	}
}

func tarError(what string, err error) error {
	if errors.Is(err, tar.ErrHeader) || errors.Is(err, tar.ErrFieldTooLong) || errors.Is(err, tar.ErrInsecurePath) {
		return fmt.Errorf("%w: %s: %v (not a tar, or a corrupt one)", ErrCorruptInput, what, err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s: truncated (an entry is shorter than its header says)", ErrCorruptInput, what)
	}
	return inputError(err)
}

// entry records one header and drains its data, cutting chunks.
func (s *scanner) entry(tr *tar.Reader, hdr *tar.Header, boundary int64) error {
	e, ok, err := entryFromHeader(hdr)
	if err != nil || !ok {
		return err
	}
	if s.entries >= s.opts.Limits.MaxEntries {
		return overLimit(LimitEntries, int64(s.opts.Limits.MaxEntries), "has more than %d entries", s.opts.Limits.MaxEntries)
	}
	if err := checkNames(&e, s.opts.Limits); err != nil {
		return err
	}
	if err := s.tree.add(s.entries, &e, s.opts.Limits); err != nil {
		return err
	}
	dataStart := s.cw.pos()
	// Small entries share a chunk until it holds ChunkSize bytes; a file
	// bigger than that starts a chunk of its own, so that reading a small
	// file never fetches a big neighbour.
	big := e.Type == TypeReg && e.Size > s.opts.ChunkSize
	if big || boundary-s.cw.start >= s.opts.ChunkSize {
		if err := s.cw.cut(boundary); err != nil {
			return err
		}
	}
	large := e.Type == TypeReg && e.Size > s.opts.FileChunkSize
	if e.Type == TypeReg {
		e.Offset = dataStart
		if err := s.drain(tr, e, large); err != nil {
			return err
		}
		if physical := s.cw.pos() - dataStart; physical != e.Size {
			if err := s.sparseMap(&e, physical); err != nil {
				return err
			}
		}
		if e.Size == 0 {
			e.Offset = 0
		}
	}
	if e.Unsafe && len(s.unsafeNames) < 100 {
		s.unsafeNames = append(s.unsafeNames, e.Name)
	}
	s.entries++
	return s.toc.add(&e)
}

// checkNames applies the path limits to an entry's name and link target.
func checkNames(e *Entry, lim Limits) error {
	// A directory's trailing "/" and a leading "./" are not part of the
	// path an unpack creates.
	name := strings.TrimSuffix(strings.TrimPrefix(e.Name, "./"), "/")
	linkMax := lim.MaxPathBytes
	if e.Type == TypeSymlink {
		linkMax = max(linkMax, maxSymlinkTarget)
	}
	for _, p := range [...]struct {
		what, name string
		max        int
	}{{"name", name, lim.MaxPathBytes}, {"link target", e.LinkName, linkMax}} {
		if len(p.name) > p.max {
			return overLimit(LimitPathBytes, int64(p.max), "has an entry whose %s is %d bytes long, more than %d (%s)",
				p.what, len(p.name), p.max, abbreviate(p.name))
		}
	}
	for el := range strings.SplitSeq(e.Name, "/") {
		limit := lim.MaxNameBytes
		if strings.HasPrefix(el, whiteoutPrefix) {
			limit += len(whiteoutPrefix)
		}
		if len(el) > limit {
			return overLimit(LimitNameBytes, int64(lim.MaxNameBytes), "has an entry whose name has a %d-byte element, more than %d (%s)",
				len(el), lim.MaxNameBytes, abbreviate(e.Name))
		}
	}
	return nil
}

const whiteoutPrefix = ".wh."

// maxSymlinkTarget is the longest target symlink(2) takes: PATH_MAX less
// its NUL.
const maxSymlinkTarget = 4095

// abbreviate quotes a name for an error message, shortened if long: a
// hostile name can be megabytes.
func abbreviate(name string) string {
	const keep = 60
	if len(name) <= 2*keep {
		return strconv.Quote(name)
	}
	return strconv.Quote(name[:keep]) + "…" + strconv.Quote(name[len(name)-keep:])
}

// drain reads a file's data through the tee; a large file is cut every
// FileChunkSize bytes from its start.
func (s *scanner) drain(tr *tar.Reader, e Entry, large bool) error {
	if e.Size > s.opts.Limits.MaxUncompressedSize {
		return overLimit(LimitUncompressedBytes, s.opts.Limits.MaxUncompressedSize, "has a file of %d bytes, more than %d (%s)",
			e.Size, s.opts.Limits.MaxUncompressedSize, abbreviate(e.Name))
	}
	var inPiece int64
	for {
		want := int64(len(s.buf))
		if large {
			want = min(want, s.opts.FileChunkSize-inPiece)
		}
		n, err := tr.Read(s.buf[:want])
		inPiece += int64(n)
		if large && inPiece == s.opts.FileChunkSize {
			if cerr := s.cw.cut(s.cw.pos()); cerr != nil {
				return cerr
			}
			inPiece = 0
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return tarError(fmt.Sprintf("reading %q", e.Name), err)
		}
	}
}

// entryFromHeader maps a tar header onto a TOC entry; ok is false for
// headers that describe no file (PAX global headers).
func entryFromHeader(h *tar.Header) (e Entry, ok bool, err error) {
	e = Entry{
		Name: h.Name, Mode: h.Mode & 07777, UID: h.Uid, GID: h.Gid, Uname: h.Uname, Gname: h.Gname,
		ModTime: h.ModTime.Unix(), ModTimeNsec: int64(h.ModTime.Nanosecond()),
		LinkName: h.Linkname, DevMajor: h.Devmajor, DevMinor: h.Devminor,
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse:
		e.Type, e.Size = TypeReg, h.Size
	case tar.TypeDir:
		e.Type = TypeDir
	case tar.TypeSymlink:
		e.Type = TypeSymlink
	case tar.TypeLink:
		e.Type = TypeHardlink
	case tar.TypeChar:
		e.Type = TypeChar
	case tar.TypeBlock:
		e.Type = TypeBlock
	case tar.TypeFifo:
		e.Type = TypeFIFO
	case tar.TypeXGlobalHeader:
		return e, false, nil
	default:
		return e, false, fmt.Errorf("%w: %q has tar type %q, which container layers do not use", ErrUnsupportedInput, h.Name, h.Typeflag)
	}
	if e.Type != TypeSymlink && e.Type != TypeHardlink {
		e.LinkName = ""
	}
	if e.Type != TypeChar && e.Type != TypeBlock {
		e.DevMajor, e.DevMinor = 0, 0
	}
	e.Xattrs = xattrsFromPAX(h.PAXRecords)
	e.Unsafe = unsafeName(e.Name) || (e.Type == TypeHardlink && unsafeName(e.LinkName))
	return e, true, nil
}

func xattrsFromPAX(records map[string]string) map[string][]byte {
	var x map[string][]byte
	for k, v := range records {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if x == nil {
			x = make(map[string][]byte)
		}
		x[name] = []byte(v)
	}
	return x
}
