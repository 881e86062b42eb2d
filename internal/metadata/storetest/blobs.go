package storetest

import (
	"slices"

	"github.com/sluicehq/sluice/internal/metadata"
)

var blobCases = []testCase{
	{"a linked blob has its size in its repository only", func(h *harness) {
		b := h.blob("app", "layer")
		size, readable, err := h.s.BlobSize(h.ctx, "app", b.Digest)
		h.ok(err)
		if size != b.Size || !readable {
			h.t.Fatalf("BlobSize: %d, readable %v", size, readable)
		}
		_, _, err = h.s.BlobSize(h.ctx, "other", b.Digest)
		h.is(err, metadata.ErrNotFound, "BlobSize in another repository")
		_, _, err = h.s.BlobSize(h.ctx, "app", digestOf("never"))
		h.is(err, metadata.ErrNotFound, "BlobSize of a blob never stored")
	}},
	{"a read-disabled repository's blobs are not readable", func(h *harness) {
		b := h.blob("app", "layer")
		h.ok(h.s.UpdateRepository(h.ctx, "app", metadata.RepositoryPatch{Attributes: metadata.AttributesPatch{ReadEnabled: boolPtr(false)}}, false))
		if _, readable, err := h.s.BlobSize(h.ctx, "app", b.Digest); err != nil || readable {
			h.t.Fatalf("BlobSize in a read-disabled repository: readable %v, %v", readable, err)
		}
		_, err := h.s.MountBlob(h.ctx, "other", "app", b.Digest)
		h.is(err, metadata.ErrNotFound, "MountBlob from a read-disabled repository")
	}},
	{"a blob is linked only once it was touched", func(h *harness) {
		h.is(h.s.LinkBlob(h.ctx, "app", digestOf("untouched"), 9), metadata.ErrBlobDeleting, "LinkBlob of an untouched blob")
	}},
	{"a mount links a blob the source repository holds", func(h *harness) {
		b := h.blob("from", "layer")
		size, err := h.s.MountBlob(h.ctx, "to", "from", b.Digest)
		h.ok(err)
		if size != b.Size {
			h.t.Fatalf("mounted size %d, want %d", size, b.Size)
		}
		if _, _, err := h.s.BlobSize(h.ctx, "to", b.Digest); err != nil {
			h.t.Fatalf("mounted blob: %v", err)
		}
		_, err = h.s.MountBlob(h.ctx, "to", "elsewhere", b.Digest)
		h.is(err, metadata.ErrNotFound, "MountBlob from a repository without it")
	}},
	{"unlinking takes a blob out of one repository", func(h *harness) {
		b := h.blob("app", "layer")
		h.blob("other", "layer")
		h.ok(h.s.UnlinkBlob(h.ctx, "app", b.Digest))
		_, _, err := h.s.BlobSize(h.ctx, "app", b.Digest)
		h.is(err, metadata.ErrNotFound, "BlobSize after unlink")
		h.is(h.s.UnlinkBlob(h.ctx, "app", b.Digest), metadata.ErrNotFound, "UnlinkBlob again")
		h.is(h.s.UnlinkBlob(h.ctx, "nothing", b.Digest), metadata.ErrNotFound, "UnlinkBlob in a missing repository")
		holders, err := h.s.RepositoriesWithBlob(h.ctx, b.Digest, 10)
		h.ok(err)
		if !slices.Equal(holders, []string{"other"}) {
			h.t.Fatalf("holders after unlink: %v", holders)
		}
	}},
	{"a delete-disabled repository keeps its blobs", func(h *harness) {
		b := h.blob("app", "layer")
		h.ok(h.s.UpdateRepository(h.ctx, "app", metadata.RepositoryPatch{Attributes: metadata.AttributesPatch{DeleteEnabled: boolPtr(false)}}, false))
		h.is(h.s.UnlinkBlob(h.ctx, "app", b.Digest), metadata.ErrDenied, "UnlinkBlob")
	}},
	{"the holders of a blob are listed in name order up to a limit", func(h *harness) {
		for _, repo := range []string{"c", "a", "b"} {
			h.blob(repo, "layer")
		}
		holders, err := h.s.RepositoriesWithBlob(h.ctx, digestOf("layer"), 2)
		h.ok(err)
		if !slices.Equal(holders, []string{"a", "b"}) {
			h.t.Fatalf("holders: %v, want [a b]", holders)
		}
	}},
	{"unlinking an unreferenced blob keeps one a manifest references", func(h *harness) {
		used := h.blob("app", "used")
		loose := h.blob("app", "loose")
		h.push(image("app", "m", used))
		h.ok(h.s.UnlinkUnreferencedBlob(h.ctx, "app", used.Digest))
		h.ok(h.s.UnlinkUnreferencedBlob(h.ctx, "app", loose.Digest))
		if _, _, err := h.s.BlobSize(h.ctx, "app", used.Digest); err != nil {
			h.t.Fatalf("referenced blob unlinked: %v", err)
		}
		_, _, err := h.s.BlobSize(h.ctx, "app", loose.Digest)
		h.is(err, metadata.ErrNotFound, "BlobSize of the unreferenced blob")
	}},
	{"a stored blob is linked without its bytes while some repository holds it", func(h *harness) {
		b := h.blob("one", "converted layer")
		h.ok(h.s.LinkStoredBlob(h.ctx, "two", b.Digest))
		if size, _, err := h.s.BlobSize(h.ctx, "two", b.Digest); err != nil || size != b.Size {
			h.t.Fatalf("linked stored blob: %d, %v", size, err)
		}
		h.is(h.s.LinkStoredBlob(h.ctx, "two", digestOf("never")), metadata.ErrNotFound, "LinkStoredBlob of a blob never stored")
		orphan := digestOf("orphan")
		_, err := h.s.TouchBlob(h.ctx, orphan)
		h.ok(err)
		h.is(h.s.LinkStoredBlob(h.ctx, "two", orphan), metadata.ErrNotFound, "LinkStoredBlob of a blob linked nowhere")
	}},
}
