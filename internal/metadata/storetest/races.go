package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sluicehq/sluice/internal/metadata"
)

// parallel runs fn(i) for i in [0, n) at once and waits for all.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}

var raceCases = []testCase{
	{"writers of one tag all succeed and the tag points at one of them", func(h *harness) {
		const n = 8
		layer := h.blob("app", "layer")
		pushed := make([]*metadata.Manifest, n)
		errs := make([]error, n)
		parallel(n, func(i int) {
			pushed[i] = image("app", fmt.Sprint("writer ", i), layer)
			errs[i] = h.s.PutManifest(h.ctx, pushed[i], []string{"latest"}, nil)
		})
		h.ok(errors.Join(errs...))
		got, err := h.s.GetManifest(h.ctx, "app", "latest", "", true)
		h.ok(err)
		found := false
		for _, m := range pushed {
			found = found || m.Digest == got.Digest && string(m.Payload) == string(got.Payload)
			if _, err := h.s.GetManifest(h.ctx, "app", "", m.Digest, false); err != nil {
				h.t.Fatalf("manifest %s lost: %v", m.Digest, err)
			}
		}
		if !found {
			h.t.Fatalf("latest points at %s, which no writer pushed", got.Digest)
		}
	}},
	{"a delete racing a push leaves no tag pointing at nothing", func(h *harness) {
		layer := h.blob("app", "layer")
		for i := range 20 {
			m := image("app", fmt.Sprint("round ", i), layer)
			tag := fmt.Sprint("t", i)
			var putErr, delErr error
			parallel(2, func(w int) {
				if w == 0 {
					putErr = h.s.PutManifest(h.ctx, m, []string{tag}, nil)
				} else {
					_, delErr = h.s.DeleteManifest(h.ctx, "app", m.Digest, metadata.Deletion{})
				}
			})
			h.ok(putErr)
			if delErr != nil && !errors.Is(delErr, metadata.ErrNotFound) {
				h.t.Fatalf("round %d: delete: %v", i, delErr)
			}
			byTag, tagErr := h.s.GetManifest(h.ctx, "app", tag, "", false)
			_, digestErr := h.s.GetManifest(h.ctx, "app", "", m.Digest, false)
			if (tagErr == nil) != (digestErr == nil) || (tagErr == nil && byTag.Digest != m.Digest) {
				h.t.Fatalf("round %d: by tag %v, by digest %v", i, tagErr, digestErr)
			}
			if (delErr == nil) == (digestErr == nil) {
				h.t.Fatalf("round %d: the delete says %v and the manifest is there: %v", i, delErr, digestErr == nil)
			}
		}
	}},
	{"two workers claiming one operation: one gets it", func(h *harness) {
		h.enqueue("op", kindConversion, "app", "d")
		const n = 6
		got := make([]*metadata.Operation, n)
		errs := make([]error, n)
		parallel(n, func(i int) {
			got[i], errs[i] = h.s.ClaimOperation(h.ctx, kindConversion, fmt.Sprint("worker ", i), lease)
		})
		winners := 0
		for i := range n {
			switch {
			case errs[i] == nil:
				winners++
			case !errors.Is(errs[i], metadata.ErrNotFound):
				h.t.Fatalf("worker %d: %v", i, errs[i])
			}
		}
		if winners != 1 {
			h.t.Fatalf("%d workers claimed the operation", winners)
		}
	}},
	{"two chunks at one offset: one is recorded", func(h *harness) {
		h.newUpload("app", "u")
		errs := make([]error, 2)
		parallel(2, func(i int) {
			errs[i] = h.s.AppendUploadPart(h.ctx, "app", "u", 0, metadata.UploadPart{Key: fmt.Sprint("part ", i), Size: 10}, []byte("s"))
		})
		if (errs[0] == nil) == (errs[1] == nil) || !errors.Is(errors.Join(errs...), metadata.ErrUploadConflict) {
			h.t.Fatalf("two appends at offset 0: %v", errs)
		}
		if u, _ := h.s.GetUpload(h.ctx, "app", "u"); u.Size != 10 || len(u.Parts) != 1 {
			h.t.Fatalf("upload after the race: %+v", u)
		}
	}},
	{"a collection racing a link: the blob ends marked or linked, never both", func(h *harness) {
		for i := range 20 {
			d := digestOf(fmt.Sprint("blob ", i))
			_, err := h.s.TouchBlob(h.ctx, d)
			h.ok(err)
			var linkErr, markErr error
			var marked []string
			parallel(2, func(w int) {
				if w == 0 {
					linkErr = h.s.LinkBlob(h.ctx, "app", d, 4)
					return
				}
				marked, markErr = h.s.MarkBlobsForCollection(h.ctx, h.clock.Now().Add(time.Hour), h.clock.Now().Add(-time.Hour), 100)
			})
			h.ok(markErr)
			_, _, sizeErr := h.s.BlobSize(h.ctx, "app", d)
			isMarked := slices.Contains(marked, d)
			switch {
			case isMarked && (linkErr == nil || sizeErr == nil):
				h.t.Fatalf("round %d: marked and linked (%v)", i, linkErr)
			case !isMarked && (linkErr != nil || sizeErr != nil):
				h.t.Fatalf("round %d: neither marked nor linked: %v, %v", i, linkErr, sizeErr)
			}
			if isMarked && !errors.Is(linkErr, metadata.ErrBlobDeleting) {
				h.t.Fatalf("round %d: linking a marked blob: %v", i, linkErr)
			}
		}
	}},
}
