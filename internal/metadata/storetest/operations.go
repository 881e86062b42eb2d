package storetest

import (
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/metadata"
)

const (
	kindConversion = "Conversion"
	kindImport     = "Import"
	lease          = 30 * time.Second
)

// conversionOf is a queued conversion of m, with id.
func conversionOf(id string, m *metadata.Manifest) *metadata.Operation {
	return &metadata.Operation{ID: id, Kind: kindConversion, Repository: m.Repository, Digest: m.Digest, Request: `{"r":1}`, Details: "queued",
		StartedBy: metadata.AutoStreaming}
}

// enqueue records a queued operation of kind for an image.
func (h *harness) enqueue(id, kind, repo, dgst string) *metadata.Operation {
	h.t.Helper()
	op, err := h.s.CreateOperation(h.ctx, &metadata.Operation{ID: id, Kind: kind, Repository: repo, Digest: dgst, Details: "queued"})
	h.ok(err)
	return op
}

// claim claims the next operation of kind for owner, or fails the case.
func (h *harness) claim(kind, owner string) *metadata.Operation {
	h.t.Helper()
	op, err := h.s.ClaimOperation(h.ctx, kind, owner, lease)
	h.ok(err)
	return op
}

var operationCases = []testCase{
	{"the queue's depth counts the operations waiting, by kind", func(h *harness) {
		h.enqueue("a", kindConversion, "app", "d1")
		h.enqueue("b", kindConversion, "app", "d2")
		h.enqueue("c", kindImport, "app", "d3")
		_, err := h.s.ClaimOperation(h.ctx, kindConversion, "w1", time.Minute)
		h.ok(err)
		counts, err := h.s.QueuedOperations(h.ctx)
		h.ok(err)
		if len(counts) != 2 || counts[kindConversion] != 1 || counts[kindImport] != 1 {
			h.t.Fatalf("queued %v, want one conversion (the other runs) and one import", counts)
		}
	}},
	{"an operation is created queued, once per image and kind", func(h *harness) {
		op, err := h.s.CreateOperation(h.ctx, &metadata.Operation{ID: "a", Kind: kindConversion, Repository: "app", Digest: "d1", Request: `{"x":1}`, TotalBytes: 100})
		h.ok(err)
		if op.Status != metadata.StatusNotStarted || op.Request != `{"x":1}` || op.TotalBytes != 100 || !op.CreatedAt.Equal(h.clock.Now()) || !op.FinishedAt.IsZero() || !op.Active() {
			h.t.Fatalf("created: %+v", op)
		}
		dup, err := h.s.CreateOperation(h.ctx, &metadata.Operation{ID: "b", Kind: kindConversion, Repository: "app", Digest: "d1"})
		h.is(err, metadata.ErrOperationActive, "a second active operation of the image")
		if dup == nil || dup.ID != "a" {
			h.t.Fatalf("the active operation returned with ErrOperationActive: %+v", dup)
		}
		h.enqueue("c", kindImport, "app", "d1")
		h.enqueue("d", kindConversion, "app", "d2")
		_, err = h.s.GetOperation(h.ctx, "b")
		h.is(err, metadata.ErrNotFound, "the refused operation")
		done, err := h.s.CreateOperation(h.ctx, &metadata.Operation{ID: "e", Kind: kindConversion, Repository: "app", Digest: "d1", Status: metadata.StatusSucceeded, Result: `{"ok":true}`})
		h.ok(err)
		if done.Active() || !done.FinishedAt.Equal(h.clock.Now()) || done.Result != `{"ok":true}` {
			h.t.Fatalf("an operation recorded finished: %+v", done)
		}
	}},
	{"active and latest operations of an image", func(h *harness) {
		_, err := h.s.ActiveOperation(h.ctx, kindConversion, "app", "d")
		h.is(err, metadata.ErrNotFound, "ActiveOperation of an image without one")
		_, err = h.s.LatestOperation(h.ctx, kindConversion, "app", "d")
		h.is(err, metadata.ErrNotFound, "LatestOperation of an image without one")
		h.enqueue("first", kindConversion, "app", "d")
		h.claim(kindConversion, "w")
		_, err = h.s.FinishOperation(h.ctx, "first", "w", metadata.Operation{Status: metadata.StatusFailed, ErrorCode: "E", ErrorMessage: "broke"})
		h.ok(err)
		h.clock.Advance(time.Second)
		h.enqueue("second", kindConversion, "app", "d")
		if op, err := h.s.ActiveOperation(h.ctx, kindConversion, "app", "d"); err != nil || op.ID != "second" {
			h.t.Fatalf("active: %+v, %v", op, err)
		}
		if op, err := h.s.LatestOperation(h.ctx, kindConversion, "app", "d"); err != nil || op.ID != "second" {
			h.t.Fatalf("latest: %+v, %v", op, err)
		}
		failed, err := h.s.GetOperation(h.ctx, "first")
		h.ok(err)
		if failed.Status != metadata.StatusFailed || failed.ErrorCode != "E" || failed.ErrorMessage != "broke" || failed.FinishedAt.IsZero() {
			h.t.Fatalf("failed operation: %+v", failed)
		}
	}},
	{"workers claim the oldest queued operation of their kind", func(h *harness) {
		_, err := h.s.ClaimOperation(h.ctx, kindConversion, "w", lease)
		h.is(err, metadata.ErrNotFound, "claiming from an empty queue")
		h.enqueue("old", kindConversion, "app", "d1")
		h.clock.Advance(time.Second)
		h.enqueue("import", kindImport, "app", "d2")
		h.clock.Advance(time.Second)
		h.enqueue("new", kindConversion, "app", "d3")
		op := h.claim(kindConversion, "w")
		if op.ID != "old" || op.Status != metadata.StatusRunning || op.Attempts != 1 || !op.StartedAt.Equal(h.clock.Now()) {
			h.t.Fatalf("first claim: %+v", op)
		}
		if op := h.claim(kindConversion, "w"); op.ID != "new" {
			h.t.Fatalf("second claim: %s, want new", op.ID)
		}
		_, err = h.s.ClaimOperation(h.ctx, kindConversion, "w", lease)
		h.is(err, metadata.ErrNotFound, "claiming with every operation leased")
		if op := h.claim(kindImport, "w"); op.ID != "import" {
			h.t.Fatalf("import claim: %s", op.ID)
		}
	}},
	{"a heartbeat renews the lease and records progress", func(h *harness) {
		h.enqueue("op", kindConversion, "app", "d")
		h.claim(kindConversion, "w")
		h.clock.Advance(lease - time.Second)
		status, err := h.s.Heartbeat(h.ctx, "op", "w", lease, 40, 100, "converting")
		h.ok(err)
		if status != metadata.StatusRunning {
			h.t.Fatalf("heartbeat status %s", status)
		}
		h.clock.Advance(lease - time.Second)
		_, err = h.s.ClaimOperation(h.ctx, kindConversion, "other", lease)
		h.is(err, metadata.ErrNotFound, "claiming an operation whose lease was renewed")
		op, err := h.s.GetOperation(h.ctx, "op")
		h.ok(err)
		if op.ProgressBytes != 40 || op.TotalBytes != 100 || op.Details != "converting" {
			h.t.Fatalf("progress: %+v", op)
		}
	}},
	{"a lease that runs out passes the operation to another worker", func(h *harness) {
		h.enqueue("op", kindConversion, "app", "d")
		h.claim(kindConversion, "dead")
		h.clock.Advance(lease + time.Second)
		op := h.claim(kindConversion, "alive")
		if op.ID != "op" || op.Attempts != 2 {
			h.t.Fatalf("taken over: %+v", op)
		}
		status, err := h.s.Heartbeat(h.ctx, "op", "dead", lease, 1, 1, "")
		h.ok(err)
		if status == metadata.StatusRunning {
			h.t.Fatal("the first worker's heartbeat says Running after the takeover")
		}
		if ok, err := h.s.FinishOperation(h.ctx, "op", "dead", metadata.Operation{Status: metadata.StatusSucceeded}); ok || err != nil {
			h.t.Fatalf("the first worker finished the operation taken from it: %v, %v", ok, err)
		}
		if ok, err := h.s.FinishOperation(h.ctx, "op", "alive", metadata.Operation{Status: metadata.StatusSucceeded, TotalBytes: 500, Result: "{}"}); !ok || err != nil {
			h.t.Fatalf("the new owner could not finish: %v, %v", ok, err)
		}
		done, err := h.s.GetOperation(h.ctx, "op")
		h.ok(err)
		if done.Status != metadata.StatusSucceeded || done.ProgressBytes != 500 || done.TotalBytes != 500 || done.Active() {
			h.t.Fatalf("succeeded: %+v", done)
		}
		if ok, _ := h.s.FinishOperation(h.ctx, "op", "alive", metadata.Operation{Status: metadata.StatusFailed}); ok {
			h.t.Fatal("a finished operation was finished again")
		}
	}},
	{"an operation handed back is claimed again after its delay", func(h *harness) {
		h.enqueue("op", kindConversion, "app", "d")
		h.claim(kindConversion, "w")
		h.ok(h.s.RetryOperation(h.ctx, "op", "w", time.Minute, "retrying"))
		_, err := h.s.ClaimOperation(h.ctx, kindConversion, "w", lease)
		h.is(err, metadata.ErrNotFound, "claiming before the retry delay")
		h.clock.Advance(time.Minute)
		if op := h.claim(kindConversion, "w2"); op.Attempts != 2 || op.Details != "retrying" {
			h.t.Fatalf("retried: %+v", op)
		}
	}},
	{"a cancel ends an active operation and its worker learns it", func(h *harness) {
		h.enqueue("op", kindConversion, "app", "d")
		h.claim(kindConversion, "w")
		op, err := h.s.CancelOperation(h.ctx, "op")
		h.ok(err)
		if op.Status != metadata.StatusCanceled || op.FinishedAt.IsZero() {
			h.t.Fatalf("canceled: %+v", op)
		}
		if status, err := h.s.Heartbeat(h.ctx, "op", "w", lease, 0, 0, ""); err != nil || status != metadata.StatusCanceled {
			h.t.Fatalf("heartbeat after cancel: %s, %v", status, err)
		}
		if ok, _ := h.s.FinishOperation(h.ctx, "op", "w", metadata.Operation{Status: metadata.StatusSucceeded}); ok {
			h.t.Fatal("a canceled operation was finished")
		}
		h.enqueue("done", kindConversion, "app", "d2")
		h.claim(kindConversion, "w")
		_, err = h.s.FinishOperation(h.ctx, "done", "w", metadata.Operation{Status: metadata.StatusSucceeded})
		h.ok(err)
		if op, err := h.s.CancelOperation(h.ctx, "done"); err != nil || op.Status != metadata.StatusSucceeded {
			h.t.Fatalf("canceling a finished operation: %+v, %v", op, err)
		}
		_, err = h.s.CancelOperation(h.ctx, "missing")
		h.is(err, metadata.ErrNotFound, "canceling a missing operation")
	}},
	{"the conversions of deleted images are canceled", func(h *harness) {
		h.enqueue("a", kindConversion, "app", "d1")
		h.enqueue("b", kindConversion, "app", "d2")
		h.enqueue("c", kindConversion, "app", "d3")
		h.enqueue("i", kindImport, "app", "d1")
		h.enqueue("o", kindConversion, "other", "d1")
		ids, err := h.s.CancelOperationsFor(h.ctx, kindConversion, "app", []string{"d1", "d2", "d9"})
		h.ok(err)
		if len(ids) != 2 || ids[0] != "a" || ids[1] != "b" {
			h.t.Fatalf("canceled %v, want [a b]", ids)
		}
		for id, want := range map[string]string{"a": metadata.StatusCanceled, "c": metadata.StatusNotStarted, "i": metadata.StatusNotStarted, "o": metadata.StatusNotStarted} {
			if op, _ := h.s.GetOperation(h.ctx, id); op.Status != want {
				h.t.Fatalf("operation %s: %s, want %s", id, op.Status, want)
			}
		}
	}},
	{"converted layers are remembered by source and format version", func(h *harness) {
		_, err := h.s.GetConvertedLayer(h.ctx, "src", "v1")
		h.is(err, metadata.ErrNotFound, "a layer never converted")
		c := &metadata.ConvertedLayer{SourceDigest: "src", FormatVersion: "v1", Digest: "out", Size: 9, MediaType: "application/x", Annotations: `{"a":"b"}`}
		h.ok(h.s.PutConvertedLayer(h.ctx, c))
		got, err := h.s.GetConvertedLayer(h.ctx, "src", "v1")
		h.ok(err)
		if *got != *c {
			h.t.Fatalf("converted layer %+v, want %+v", got, c)
		}
		_, err = h.s.GetConvertedLayer(h.ctx, "src", "v2")
		h.is(err, metadata.ErrNotFound, "another format version")
		c.Digest, c.Size = "again", 10
		h.ok(h.s.PutConvertedLayer(h.ctx, c))
		if got, _ := h.s.GetConvertedLayer(h.ctx, "src", "v1"); got.Digest != "again" || got.Size != 10 {
			h.t.Fatalf("replaced converted layer: %+v", got)
		}
	}},
	{"an operation keeps who started it", func(h *harness) {
		op, err := h.s.CreateOperation(h.ctx, &metadata.Operation{ID: "a", Kind: kindConversion, Repository: "app", Digest: "d", StartedBy: "ci-bot"})
		h.ok(err)
		if op.StartedBy != "ci-bot" {
			h.t.Fatalf("created: started by %q", op.StartedBy)
		}
		claimed := h.claim(kindConversion, "w")
		_, err = h.s.FinishOperation(h.ctx, "a", "w", metadata.Operation{Status: metadata.StatusFailed, ErrorCode: "E"})
		h.ok(err)
		finished, err := h.s.GetOperation(h.ctx, "a")
		h.ok(err)
		if claimed.StartedBy != "ci-bot" || finished.StartedBy != "ci-bot" {
			h.t.Fatalf("started by %q when claimed, %q when finished", claimed.StartedBy, finished.StartedBy)
		}
		h.enqueue("b", kindConversion, "app", "d2")
		if op, _ := h.s.GetOperation(h.ctx, "b"); op.StartedBy != "" {
			h.t.Fatalf("an operation nobody was named for: started by %q", op.StartedBy)
		}
	}},
	{"operations are listed newest first, filtered and in pages", func(h *harness) {
		ops, more, err := h.s.ListOperations(h.ctx, metadata.OperationFilter{}, "", 10)
		h.ok(err)
		if len(ops) != 0 || more || ops == nil {
			h.t.Fatalf("empty store: %v, more %v", ops, more)
		}
		h.enqueue("1", kindConversion, "app", "d1")
		h.clock.Advance(time.Second)
		h.enqueue("2", kindImport, "lib/base", "src")
		h.clock.Advance(time.Second)
		// 3 and 4 are created at once: the id breaks the tie.
		h.enqueue("3", kindConversion, "app", "d2")
		h.enqueue("4", kindConversion, "lib/base", "d3")
		h.claim(kindConversion, "w") // 1, the oldest
		_, err = h.s.FinishOperation(h.ctx, "1", "w", metadata.Operation{Status: metadata.StatusFailed})
		h.ok(err)
		_, err = h.s.CancelOperation(h.ctx, "4")
		h.ok(err)
		h.clock.Advance(time.Second)
		h.enqueue("5", kindConversion, "app", "d1")

		ids := func(f metadata.OperationFilter, last string, n int) string {
			h.t.Helper()
			ops, more, err := h.s.ListOperations(h.ctx, f, last, n)
			h.ok(err)
			var b strings.Builder
			for _, op := range ops {
				b.WriteString(op.ID)
			}
			if more {
				b.WriteString("+")
			}
			return b.String()
		}
		for _, tc := range []struct {
			f       metadata.OperationFilter
			last    string
			n       int
			want    string
			explain string
		}{
			{metadata.OperationFilter{}, "", -1, "54321", "all, newest first"},
			{metadata.OperationFilter{}, "", 2, "54+", "a first page"},
			{metadata.OperationFilter{}, "4", 2, "32+", "the page after 4, created with 3"},
			{metadata.OperationFilter{}, "2", 2, "1", "the last page"},
			{metadata.OperationFilter{}, "", 5, "54321", "a page of exactly all"},
			{metadata.OperationFilter{}, "", 0, "+", "an empty page"},
			{metadata.OperationFilter{Repository: "app"}, "", -1, "531", "of a repository"},
			{metadata.OperationFilter{Repository: "app"}, "5", 1, "3+", "of a repository, after 5"},
			{metadata.OperationFilter{Status: metadata.StatusNotStarted}, "", -1, "532", "queued"},
			{metadata.OperationFilter{Status: metadata.StatusFailed}, "", -1, "1", "failed"},
			{metadata.OperationFilter{Status: metadata.StatusCanceled, Repository: "lib/base"}, "", -1, "4", "canceled, of a repository"},
			{metadata.OperationFilter{Kind: kindImport}, "", -1, "2", "imports"},
			{metadata.OperationFilter{Repository: "none"}, "", -1, "", "of a repository without any"},
		} {
			if got := ids(tc.f, tc.last, tc.n); got != tc.want {
				h.t.Errorf("%s: %q, want %q", tc.explain, got, tc.want)
			}
		}
		_, _, err = h.s.ListOperations(h.ctx, metadata.OperationFilter{}, "nope", 10)
		h.is(err, metadata.ErrNotFound, "a page after an operation that does not exist")
	}},
}
