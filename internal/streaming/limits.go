package streaming

import (
	"encoding/hex"
	"fmt"
	"runtime"
	"sort"
	"sync"

	"github.com/opencontainers/go-digest"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Limits bound what the converter accepts and what the reader trusts, so
// that hostile input fails with ErrLimitExceeded (as a *LimitError naming
// the limit) instead of exhausting memory or disk. The converter checks each
// limit as it reads each tar entry, so a layer fails as soon as it crosses
// one. Zero fields take the defaults below. The key of each limit (in
// LimitError.Limit and in sluiced's configuration, under streaming.limits)
// is given in brackets.
type Limits struct {
	// MaxTOCSize bounds the TOC frame as stored, compressed
	// [maxTOCBytes] (default 64 MiB).
	MaxTOCSize int64
	// MaxTOCUncompressedSize bounds the TOC's JSON [maxTOCJSONBytes]
	// (default 512 MiB).
	MaxTOCUncompressedSize int64
	// MaxEntries bounds the number of tar entries [maxEntries] (default
	// 1,048,576).
	MaxEntries int
	// MaxPathBytes bounds an entry's name and a hard link's target as the
	// tar gives them [maxPathBytes] (default 3,840: Linux's PATH_MAX of
	// 4,096 less room for the directory an unpack writes under, beyond
	// which containerd's unpack fails too). A symbolic link's target, which
	// is not created under that directory, may be up to 4,095 bytes
	// (symlink(2)'s limit) when MaxPathBytes is lower.
	MaxPathBytes int
	// MaxNameBytes bounds each /-separated element of an entry's name
	// [maxNameBytes] (default 255, Linux's NAME_MAX). A whiteout's element
	// may be 4 bytes longer, for its ".wh." prefix.
	MaxNameBytes int
	// MaxUncompressedSize bounds the uncompressed tar
	// [maxUncompressedBytes] (default 64 GiB).
	MaxUncompressedSize int64
	// MaxRatio bounds uncompressed/compressed bytes of the source, checked
	// once RatioGrace uncompressed bytes have been produced
	// [maxExpansionRatio] (default 2000, above gzip's maximum of about
	// 1030).
	MaxRatio int64
	// RatioGrace is the uncompressed size below which the ratio is not
	// checked [expansionGraceBytes] (default 256 MiB).
	RatioGrace int64
	// MaxChunkSize bounds one chunk's uncompressed size [maxChunkBytes]
	// (default 64 MiB).
	MaxChunkSize int64
}

// DefaultLimits are the limits used for zero fields.
var DefaultLimits = Limits{
	MaxTOCSize:             64 << 20,
	MaxTOCUncompressedSize: 512 << 20,
	MaxEntries:             1 << 20,
	MaxPathBytes:           3840,
	MaxNameBytes:           255,
	MaxUncompressedSize:    64 << 30,
	MaxRatio:               2000,
	RatioGrace:             256 << 20,
	MaxChunkSize:           64 << 20,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxTOCSize > 0 {
		d.MaxTOCSize = l.MaxTOCSize
	}
	if l.MaxTOCUncompressedSize > 0 {
		d.MaxTOCUncompressedSize = l.MaxTOCUncompressedSize
	}
	if l.MaxEntries > 0 {
		d.MaxEntries = l.MaxEntries
	}
	if l.MaxPathBytes > 0 {
		d.MaxPathBytes = l.MaxPathBytes
	}
	if l.MaxNameBytes > 0 {
		d.MaxNameBytes = l.MaxNameBytes
	}
	if l.MaxUncompressedSize > 0 {
		d.MaxUncompressedSize = l.MaxUncompressedSize
	}
	if l.MaxRatio > 0 {
		d.MaxRatio = l.MaxRatio
	}
	if l.RatioGrace > 0 {
		d.RatioGrace = l.RatioGrace
	}
	if l.MaxChunkSize > 0 {
		d.MaxChunkSize = l.MaxChunkSize
	}
	return d
}

// Keys of the limits, as LimitError.Limit names them.
const (
	LimitTOCBytes          = "maxTOCBytes"
	LimitTOCJSONBytes      = "maxTOCJSONBytes"
	LimitEntries           = "maxEntries"
	LimitPathBytes         = "maxPathBytes"
	LimitNameBytes         = "maxNameBytes"
	LimitUncompressedBytes = "maxUncompressedBytes"
	LimitExpansionRatio    = "maxExpansionRatio"
	LimitChunkBytes        = "maxChunkBytes"
	// LimitConversionMemory is Options.MemoryBudget: a zstd source whose
	// window does not fit it is refused.
	LimitConversionMemory = "conversionMemoryBytes"
)

// LimitError is a layer refused by one of the Limits. It wraps
// ErrLimitExceeded.
type LimitError struct {
	// Limit is the key of the limit (LimitEntries, ...).
	Limit string
	// Value is the limit's value.
	Value int64
	// Problem says what the layer has, for a sentence about it: "has more
	// than 1,048,576 entries".
	Problem string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%v: the layer %s (limit %s)", ErrLimitExceeded, e.Problem, e.Limit)
}

func (e *LimitError) Unwrap() error { return ErrLimitExceeded }

// overLimit returns the LimitError of a limit; problem is a format whose
// arguments are formatted with thousands separators.
func overLimit(limit string, value int64, problem string, args ...any) error {
	return &LimitError{Limit: limit, Value: value, Problem: numbers.Sprintf(problem, args...)}
}

// numbers formats counts and sizes with thousands separators, as
// operators read them in error messages.
var numbers = message.NewPrinter(language.English)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: TOC: "+format, append([]any{ErrInvalidFormat}, args...)...)
}

// validate checks the TOC against itself, the limits and the size of the
// data section, and fills the entries' derived fields.
func (t *TOC) validate(dataSize int64, lim Limits) error {
	if t.Version != formatMajor {
		return fmt.Errorf("%w: TOC version %d", ErrUnsupportedVersion, t.Version)
	}
	if err := t.DiffID.Validate(); err != nil {
		return invalid("diffID %q: %v", t.DiffID, err)
	}
	if t.UncompressedSize < 0 || t.UncompressedSize > lim.MaxUncompressedSize {
		return overLimit(LimitUncompressedBytes, lim.MaxUncompressedSize, "decompresses to %d bytes, more than %d", t.UncompressedSize, lim.MaxUncompressedSize)
	}
	if len(t.Entries) > lim.MaxEntries {
		return overLimit(LimitEntries, int64(lim.MaxEntries), "has %d entries, more than %d", len(t.Entries), lim.MaxEntries)
	}
	if err := t.validateChunks(dataSize, lim); err != nil {
		return err
	}
	return t.validateEntries(lim)
}

func (t *TOC) validateChunks(dataSize int64, lim Limits) error {
	var off, uoff int64
	for i := range t.Chunks {
		c := &t.Chunks[i]
		switch {
		case c.Offset != off:
			return invalid("chunk %d at compressed offset %d, want %d (chunks must be contiguous)", i, c.Offset, off)
		case c.UncompressedOffset != uoff:
			return invalid("chunk %d at uncompressed offset %d, want %d", i, c.UncompressedOffset, uoff)
		case c.Size <= 0 || c.Size > dataSize-off:
			return invalid("chunk %d size %d does not fit the %d-byte data section", i, c.Size, dataSize)
		case c.UncompressedSize <= 0 || c.UncompressedSize > lim.MaxChunkSize:
			return invalid("chunk %d uncompressed size %d outside 1..%d", i, c.UncompressedSize, lim.MaxChunkSize)
		case c.Digest.Validate() != nil || c.Digest.Algorithm() != digest.SHA256:
			return invalid("chunk %d digest %q is not a sha256 digest", i, c.Digest)
		}
		if _, err := hex.Decode(c.sum[:], []byte(c.Digest.Encoded())); err != nil {
			return invalid("chunk %d digest %q: %v", i, c.Digest, err)
		}
		off += c.Size
		uoff += c.UncompressedSize
	}
	if off != dataSize {
		return invalid("chunks cover %d compressed bytes, data section has %d", off, dataSize)
	}
	if uoff != t.UncompressedSize {
		return invalid("chunks cover %d uncompressed bytes, TOC says %d", uoff, t.UncompressedSize)
	}
	return nil
}

func (t *TOC) validateEntries(lim Limits) error {
	// Entries on their own first, spread over the cores; then where they
	// land, in order.
	err := t.eachEntry(func(i int, e *Entry) error {
		e.index, e.target, e.nlink = i, i, 0
		if err := e.restoreRaw(); err != nil {
			return fmt.Errorf("%w (entry %d)", err, i)
		}
		e.path = cleanPath(e.Name)
		if err := t.validateEntry(e); err != nil {
			return fmt.Errorf("%w (entry %d %q)", err, i, e.Name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	p := newPlacer(byName, func(entry int32) string { return t.Entries[entry].LinkName }, len(t.Entries))
	t.implicit = nil
	p.implicit = func(d ImplicitDir) { t.implicit = append(t.implicit, d) }
	byPath := make(map[string]int, len(t.Entries))
	for i := range t.Entries {
		e := &t.Entries[i]
		pl, target, err := p.place(i, e)
		if err != nil {
			return invalid("entry %d %q: %v", i, e.Name, err)
		}
		if p.size() > maxTreeNodes(lim) {
			return overLimit(LimitEntries, int64(lim.MaxEntries), "has more than %d files and directories (entries and the directories they imply)", maxTreeNodes(lim))
		}
		e.place = pl
		if pl.Kind == PlaceName && e.Type != TypeDir {
			// nlink counts the names an inode has: one more for
			// this one, one less for the name it took.
			t.Entries[target].nlink++
			if p.replaced >= 0 {
				t.Entries[p.replaced].nlink--
			}
		}
		if e.Type == TypeHardlink {
			e.target = int(target)
			// containerd's unpack chowns, chmods and stamps a hard
			// link's path after linking it: the inode it shares takes
			// the last header's attributes.
			t.Entries[target].attr = e
		}
		byPath[e.path] = i
	}
	dirs := func(yield func(string) bool) {
		for i := range t.Entries {
			if e := &t.Entries[i]; e.Type == TypeDir && e.place.Kind != PlaceNone && !yield(e.Name) {
				return
			}
		}
	}
	if err := p.finish(dirs); err != nil {
		return invalid("%v", err)
	}
	t.byPath = byPath
	return nil
}

// maxTreeNodes bounds the names of a layer's tree: its entries and the
// directories they imply without listing them (tar writers list them, so
// a real layer implies next to none).
func maxTreeNodes(lim Limits) int { return lim.MaxEntries + max(lim.MaxEntries/8, 1024) }

// eachEntry runs check on every entry and returns the error of the first
// entry that failed. A large TOC's entries are split over the cores: a
// node checks the TOC on the critical path of a container's start.
func (t *TOC) eachEntry(check func(i int, e *Entry) error) error {
	parts := min(runtime.GOMAXPROCS(0), max(1, len(t.Entries)/4096))
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for k := range parts {
		lo, hi := len(t.Entries)*k/parts, len(t.Entries)*(k+1)/parts
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				if err := check(i, &t.Entries[i]); err != nil {
					errs[k] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (t *TOC) validateEntry(e *Entry) error {
	switch e.Type {
	case TypeReg, TypeDir, TypeSymlink, TypeHardlink, TypeChar, TypeBlock, TypeFIFO:
	default:
		return invalid("unknown entry type %q", e.Type)
	}
	unsafe := unsafeName(e.Name) || (e.Type == TypeHardlink && unsafeName(e.LinkName))
	switch {
	case unsafe && !e.Unsafe:
		return invalid("name %q escapes the layer root but is not flagged unsafe", e.Name)
	case e.Mode < 0 || e.Mode > 07777:
		return invalid("mode %#o has bits outside 07777", e.Mode)
	case e.ModTimeNsec < 0 || e.ModTimeNsec >= 1e9:
		return invalid("mtime nanoseconds %d outside 0..999999999", e.ModTimeNsec)
	case e.Size < 0 || e.Offset < 0:
		return invalid("negative size %d or offset %d", e.Size, e.Offset)
	case e.Type != TypeReg && (e.Size != 0 || e.Sparse != nil):
		return invalid("a %s entry with data", e.Type)
	case (e.Type == TypeSymlink || e.Type == TypeHardlink) && e.LinkName == "":
		return invalid("a %s without a target", e.Type)
	}
	if err := validateSparse(e); err != nil {
		return err
	}
	if n := e.DataSize(); n > 0 && (e.Offset > t.UncompressedSize || n > t.UncompressedSize-e.Offset) {
		return invalid("data at offset %d size %d beyond the %d-byte tar", e.Offset, n, t.UncompressedSize)
	}
	return nil
}

func validateSparse(e *Entry) error {
	var end int64
	ok := sort.SliceIsSorted(e.Sparse, func(i, j int) bool { return e.Sparse[i].Offset < e.Sparse[j].Offset })
	for _, f := range e.Sparse {
		if !ok || f.Offset < end || f.Length <= 0 || f.Offset > e.Size || f.Length > e.Size-f.Offset {
			return invalid("sparse fragment [%d,+%d) is unordered, overlapping or outside the %d-byte file", f.Offset, f.Length, e.Size)
		}
		end = f.Offset + f.Length
	}
	return nil
}
