package streaming

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
)

// sparseMap finds the data fragments of a sparse file (GNU old-style or PAX
// 0.0, 0.1 and 1.0 sparse formats). archive/tar does not expose the map, so
// the entry's raw headers are replayed with every data byte set to 0xff:
// what reads back as 0xff is data, what reads back as zero is a hole.
func (s *scanner) sparseMap(e *Entry, physical int64) error {
	if e.Size > s.opts.Limits.MaxUncompressedSize {
		return overLimit(LimitUncompressedBytes, s.opts.Limits.MaxUncompressedSize, "has a sparse file of %d bytes, more than %d (%s)",
			e.Size, s.opts.Limits.MaxUncompressedSize, abbreviate(e.Name))
	}
	// The capture starts where the previous entry's data ended; its headers
	// start at the next block boundary.
	headers := s.tee.capture[min(int(s.boundary-s.captureStart), len(s.tee.capture)):]
	replay := io.MultiReader(bytes.NewReader(headers), io.LimitReader(onesReader{}, physical),
		bytes.NewReader(make([]byte, alignBlock(physical)-physical+2*blockSize)))
	tr := tar.NewReader(replay)
	if _, err := tr.Next(); err != nil {
		return fmt.Errorf("%w: replaying the sparse headers of %q: %v", ErrCorruptInput, e.Name, err)
	}
	var frags []Fragment
	var off, total int64
	for {
		n, err := tr.Read(s.buf)
		frags, total = scanFragments(s.buf[:n], off, frags, total)
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: replaying the sparse map of %q: %v", ErrCorruptInput, e.Name, err)
		}
	}
	if total != physical || off != e.Size {
		return fmt.Errorf("%w: sparse file %q: map covers %d data bytes of %d, %d logical bytes of %d", ErrCorruptInput, e.Name, total, physical, off, e.Size)
	}
	e.Sparse = frags
	if e.Sparse == nil {
		e.Sparse = []Fragment{}
	}
	return nil
}

func appendFragment(frags []Fragment, off, n int64) []Fragment {
	if k := len(frags) - 1; k >= 0 && frags[k].Offset+frags[k].Length == off {
		frags[k].Length += n
		return frags
	}
	return append(frags, Fragment{Offset: off, Length: n})
}

type onesReader struct{}

func (onesReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 0xff
	}
	return len(p), nil
}

// scanFragments appends the runs of 0xff bytes in b (at logical offset off)
// to frags; holes read back as zeros.
func scanFragments(b []byte, off int64, frags []Fragment, total int64) ([]Fragment, int64) {
	for i := 0; i < len(b); {
		if b[i] == 0 {
			j := bytes.IndexByte(b[i:], 0xff)
			if j < 0 {
				break
			}
			i += j
			continue
		}
		j := i
		for j < len(b) && b[j] == 0xff {
			j++
		}
		frags = appendFragment(frags, off+int64(i), int64(j-i))
		total += int64(j - i)
		i = j
	}
	return frags, total
}
