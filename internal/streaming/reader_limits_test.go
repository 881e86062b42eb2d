package streaming

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestOpenChecksTOCSizesFirst: a TOC over the reader's limits is refused
// from the sizes the descriptor's annotation and the footer give, before
// the TOC is fetched (annotation) or decompressed (footer), with an error
// naming the limit.
func TestOpenChecksTOCSizesFirst(t *testing.T) {
	blob, res := convertBytes(t, buildTar(t, everyEntryType()), smallOpts)
	withTOC := WithTOC(res.TOCDigest, res.TOCOffset, res.TOCSize)

	cr := &countingRanges{rr: ReaderAtRanges(bytes.NewReader(blob))}
	_, err := Open(context.Background(), cr, int64(len(blob)), withTOC, WithLimits(Limits{MaxTOCSize: res.TOCSize - 1}))
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != LimitTOCBytes {
		t.Fatalf("Open with the TOC annotated over maxTOCBytes: %v, want a LimitError for %s", err, LimitTOCBytes)
	}
	if n := cr.requests.Load(); n != 0 {
		t.Errorf("the reader made %d range requests for a TOC it refused from its annotation, want none", n)
	}

	// A footer promising a terabyte of JSON: the frame and its digest are
	// unchanged, so only the footer's word can refuse it.
	footer, err := ParseFooter(blob[len(blob)-FooterSize:], int64(len(blob)))
	if err != nil {
		t.Fatal(err)
	}
	footer.TOCUncompressedSize = 1 << 40
	fb, err := footer.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	lying := append(bytes.Clone(blob[:len(blob)-FooterSize]), fb...)
	for _, opts := range [][]ReaderOption{{withTOC}, nil} {
		_, err := Open(context.Background(), ReaderAtRanges(bytes.NewReader(lying)), int64(len(lying)), opts...)
		if !errors.As(err, &le) || le.Limit != LimitTOCJSONBytes {
			t.Errorf("Open of a footer promising 1 TiB of TOC (annotations %v): %v, want a LimitError for %s", opts != nil, err, LimitTOCJSONBytes)
		}
	}
}

// TestDecodeTOCEntryCountHint: the count of entries read from the JSON to
// size their slice is a hint only: JSON that repeats what opens an entry
// elsewhere (a chunk with a "name") gets a slice capped by the entries
// limit, and decodes as it would without the hint.
func TestDecodeTOCEntryCountHint(t *testing.T) {
	blob, res := convertBytes(t, buildTar(t, everyEntryType()), smallOpts)
	frame := blob[res.TOCOffset : res.TOCOffset+res.TOCSize]
	want, err := DecodeTOC(frame, res.TOCOffset, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if cap(want.Entries) != len(want.Entries) {
		t.Errorf("a TOC of %d entries decoded into a slice of capacity %d, want exactly its entries", len(want.Entries), cap(want.Entries))
	}
	got, err := DecodeTOC(frame, res.TOCOffset, Limits{MaxEntries: len(want.Entries)})
	if err != nil || len(got.Entries) != len(want.Entries) || cap(got.Entries) > len(want.Entries)+1 {
		t.Fatalf("with maxEntries at the TOC's count: %v, %d entries in a slice of %d", err, len(got.Entries), cap(got.Entries))
	}
	if _, err := DecodeTOC(frame, res.TOCOffset, Limits{MaxEntries: len(want.Entries) - 1}); !errors.Is(err, ErrLimitExceeded) {
		t.Errorf("with maxEntries one under the TOC's count: %v, want %v", err, ErrLimitExceeded)
	}

	// Every chunk made to look like an entry opening: the hint overcounts.
	payload, err := skippablePayload(skippableTOCMagic, frame)
	if err != nil {
		t.Fatal(err)
	}
	js, err := decompressBounded(payload, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	js = bytes.ReplaceAll(js, []byte(`{"offset":`), []byte(`{"name":"x","offset":`))
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	forged := skippableFrame(skippableTOCMagic, enc.EncodeAll(js, nil))
	enc.Close()
	limit := len(want.Entries) + 2
	got, err = DecodeTOC(forged, res.TOCOffset, Limits{MaxEntries: limit})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Entries) != len(want.Entries) || cap(got.Entries) > limit+1 {
		t.Errorf("a TOC whose chunks open like entries: %d entries in a slice of %d, want %d in one of at most %d", len(got.Entries), cap(got.Entries), len(want.Entries), limit+1)
	}
	for i := range got.Entries {
		if got.Entries[i].Name != want.Entries[i].Name || got.Entries[i].Path() != want.Entries[i].Path() {
			t.Fatalf("entry %d decoded as %q, want %q", i, got.Entries[i].Name, want.Entries[i].Name)
		}
	}
}
