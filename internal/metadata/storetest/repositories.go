package storetest

import (
	"slices"

	"github.com/sluicehq/sluice/internal/metadata"
)

var repositoryCases = []testCase{
	{"a missing repository is not found", func(h *harness) {
		_, err := h.s.GetRepository(h.ctx, "nothing")
		h.is(err, metadata.ErrNotFound, "GetRepository")
		h.is(h.s.UpdateRepository(h.ctx, "nothing", metadata.RepositoryPatch{Streaming: boolPtr(true)}, false), metadata.ErrNotFound, "UpdateRepository without create")
		_, err = h.s.DeleteRepository(h.ctx, "nothing", metadata.Deletion{})
		h.is(err, metadata.ErrNotFound, "DeleteRepository")
		h.ok(h.s.CheckWritable(h.ctx, "nothing"))
	}},
	{"the first blob creates the repository with every attribute on", func(h *harness) {
		h.blob("team/app", "layer")
		r, err := h.s.GetRepository(h.ctx, "team/app")
		h.ok(err)
		want := metadata.Attributes{DeleteEnabled: true, WriteEnabled: true, ReadEnabled: true, ListEnabled: true}
		if r.Name != "team/app" || r.Attributes != want || r.Streaming || !r.CreatedAt.Equal(h.clock.Now()) {
			h.t.Fatalf("new repository: %+v", r)
		}
	}},
	{"a patch changes only what it sets", func(h *harness) {
		h.ok(h.s.UpdateRepository(h.ctx, "app", metadata.RepositoryPatch{Streaming: boolPtr(true)}, true))
		h.clock.Advance(1e9)
		h.ok(h.s.UpdateRepository(h.ctx, "app", metadata.RepositoryPatch{Attributes: metadata.AttributesPatch{ListEnabled: boolPtr(false)}}, false))
		r, err := h.s.GetRepository(h.ctx, "app")
		h.ok(err)
		if !r.Streaming || r.Attributes.ListEnabled || !r.Attributes.WriteEnabled || !r.UpdatedAt.Equal(h.clock.Now()) {
			h.t.Fatalf("patched repository: %+v", r)
		}
	}},
	{"a write-disabled repository refuses writes", func(h *harness) {
		h.blob("app", "layer")
		h.ok(h.s.UpdateRepository(h.ctx, "app", metadata.RepositoryPatch{Attributes: metadata.AttributesPatch{WriteEnabled: boolPtr(false)}}, false))
		h.is(h.s.CheckWritable(h.ctx, "app"), metadata.ErrDenied, "CheckWritable")
		d := digestOf("another")
		_, err := h.s.TouchBlob(h.ctx, d)
		h.ok(err)
		h.is(h.s.LinkBlob(h.ctx, "app", d, 7), metadata.ErrDenied, "LinkBlob")
		h.is(h.s.PutManifest(h.ctx, image("app", "m"), nil, nil), metadata.ErrDenied, "PutManifest")
	}},
	{"the catalog lists repositories with a live, listable manifest, in pages", func(h *harness) {
		for _, name := range []string{"c", "a/x", "b", "a"} {
			h.pushImage(name, name)
		}
		h.blob("only-blobs", "layer")
		h.pushImage("hidden", "hidden")
		h.ok(h.s.UpdateRepository(h.ctx, "hidden", metadata.RepositoryPatch{Attributes: metadata.AttributesPatch{ListEnabled: boolPtr(false)}}, false))

		all, more, err := h.s.ListRepositories(h.ctx, "", -1)
		h.ok(err)
		if !slices.Equal(all, []string{"a", "a/x", "b", "c"}) || more {
			h.t.Fatalf("catalog %v (more %v)", all, more)
		}
		var paged []string
		for last, pages := "", 0; ; pages++ {
			page, more, err := h.s.ListRepositories(h.ctx, last, 3)
			h.ok(err)
			paged = append(paged, page...)
			if !more {
				if pages != 1 {
					h.t.Fatalf("%d more pages, want 1", pages)
				}
				break
			}
			last = page[len(page)-1]
		}
		if !slices.Equal(paged, all) {
			h.t.Fatalf("paged catalog %v, want %v", paged, all)
		}
		none, more, err := h.s.ListRepositories(h.ctx, "", 0)
		h.ok(err)
		if len(none) != 0 || !more {
			h.t.Fatalf("a page of 0: %v (more %v), want none and more", none, more)
		}
	}},
	{"usage counts each blob once in the total and per repository", func(h *harness) {
		shared := h.blob("one", "shared layer")
		h.blob("two", "shared layer")
		own := h.blob("two", "own")
		m := h.push(image("two", "m", shared, own), "v1", "latest")
		r, err := h.s.GetRepository(h.ctx, "two")
		h.ok(err)
		if r.Size != shared.Size+own.Size+m.Size || r.ManifestCount != 1 || r.TagCount != 2 {
			h.t.Fatalf("repository two: size %d, %d manifests, %d tags; want %d, 1, 2", r.Size, r.ManifestCount, r.TagCount, shared.Size+own.Size+m.Size)
		}
		total, err := h.s.TotalSize(h.ctx)
		h.ok(err)
		if total != shared.Size+own.Size+m.Size {
			h.t.Fatalf("total %d, want %d", total, shared.Size+own.Size+m.Size)
		}
	}},
}
