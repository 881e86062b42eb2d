package storetest

import (
	"slices"
	"time"

	"github.com/sluicehq/sluice/internal/metadata"
)

// touch records a blob as about to be written, without linking it.
func (h *harness) touch(content string) string {
	h.t.Helper()
	d := digestOf(content)
	_, err := h.s.TouchBlob(h.ctx, d)
	h.ok(err)
	return d
}

var gcCases = []testCase{
	{"blobs linked nowhere and untouched for the grace period are marked", func(h *harness) {
		loose := h.touch("loose")
		linked := h.blob("app", "linked")
		h.clock.Advance(time.Hour)
		recent := h.touch("recent")
		marked, err := h.s.MarkBlobsForCollection(h.ctx, h.clock.Now().Add(-time.Minute), h.clock.Now().Add(-10*time.Minute), 10)
		h.ok(err)
		if !slices.Equal(marked, []string{loose}) {
			h.t.Fatalf("marked %v, want only the loose blob %s (not %s, linked, nor %s, recent)", marked, loose, linked.Digest, recent)
		}
		again, err := h.s.MarkBlobsForCollection(h.ctx, h.clock.Now().Add(-time.Minute), h.clock.Now().Add(-10*time.Minute), 10)
		h.ok(err)
		if len(again) != 0 {
			h.t.Fatalf("a fresh mark was taken again: %v", again)
		}
	}},
	{"a marked blob is neither touched nor linked until forgotten", func(h *harness) {
		d := h.touch("loose")
		h.clock.Advance(time.Hour)
		markedAt := h.clock.Now()
		if marked, err := h.s.MarkBlobsForCollection(h.ctx, markedAt, markedAt, 10); err != nil || len(marked) != 1 {
			h.t.Fatalf("mark: %v, %v", marked, err)
		}
		h.clock.Advance(time.Second)
		at, err := h.s.TouchBlob(h.ctx, d)
		h.is(err, metadata.ErrBlobDeleting, "touching a marked blob")
		if !at.Equal(markedAt) {
			h.t.Fatalf("marked at %v, want %v", at, markedAt)
		}
		h.is(h.s.LinkBlob(h.ctx, "app", d, 5), metadata.ErrBlobDeleting, "linking a marked blob")
		h.ok(h.s.ForgetBlob(h.ctx, d))
		if _, err := h.s.TouchBlob(h.ctx, d); err != nil {
			h.t.Fatalf("touching a forgotten blob: %v", err)
		}
		h.ok(h.s.LinkBlob(h.ctx, "app", d, 5))
	}},
	{"forgetting leaves a blob that is not marked", func(h *harness) {
		b := h.blob("app", "linked")
		h.ok(h.s.ForgetBlob(h.ctx, b.Digest))
		if _, _, err := h.s.BlobSize(h.ctx, "app", b.Digest); err != nil {
			h.t.Fatalf("a live blob was forgotten: %v", err)
		}
	}},
	{"a stale mark is taken again, a batch at a time", func(h *harness) {
		var all []string
		for _, c := range []string{"a", "b", "c"} {
			all = append(all, h.touch(c))
		}
		h.clock.Advance(time.Hour)
		first, err := h.s.MarkBlobsForCollection(h.ctx, h.clock.Now(), h.clock.Now().Add(-time.Minute), 2)
		h.ok(err)
		second, err := h.s.MarkBlobsForCollection(h.ctx, h.clock.Now(), h.clock.Now().Add(-time.Minute), 2)
		h.ok(err)
		if len(first) != 2 || len(second) != 1 || slices.Contains(first, second[0]) {
			h.t.Fatalf("batches of 2: %v then %v", first, second)
		}
		h.clock.Advance(time.Hour)
		stale, err := h.s.MarkBlobsForCollection(h.ctx, h.clock.Now(), h.clock.Now().Add(-time.Minute), 10)
		h.ok(err)
		slices.Sort(stale)
		slices.Sort(all)
		if !slices.Equal(stale, all) {
			h.t.Fatalf("stale marks taken again: %v, want %v", stale, all)
		}
	}},
	{"old links nothing references are removed", func(h *harness) {
		used := h.blob("app", "used")
		loose := h.blob("app", "loose")
		h.push(image("app", "m", used))
		h.clock.Advance(time.Hour)
		recent := h.blob("app", "recent")
		n, err := h.s.UnlinkUnreferencedBlobs(h.ctx, h.clock.Now().Add(-time.Minute))
		h.ok(err)
		if n != 1 {
			h.t.Fatalf("unlinked %d, want 1", n)
		}
		_, _, err = h.s.BlobSize(h.ctx, "app", loose.Digest)
		h.is(err, metadata.ErrNotFound, "the old unreferenced link")
		for _, d := range []string{used.Digest, recent.Digest} {
			if _, _, err := h.s.BlobSize(h.ctx, "app", d); err != nil {
				h.t.Fatalf("link %s removed: %v", d, err)
			}
		}
	}},
}
