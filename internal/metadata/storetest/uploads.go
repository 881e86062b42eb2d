package storetest

import (
	"slices"

	"github.com/sluicehq/sluice/internal/metadata"
)

// newUpload records an upload session of repo.
func (h *harness) newUpload(repo, id string) *metadata.Upload {
	h.t.Helper()
	u := &metadata.Upload{ID: id, Repository: repo, Algorithm: "sha256", HashState: []byte("state 0")}
	h.ok(h.s.CreateUpload(h.ctx, u))
	return u
}

var uploadCases = []testCase{
	{"an upload records its parts in order with the hash state after each", func(h *harness) {
		u := h.newUpload("app", "u1")
		if !u.CreatedAt.Equal(h.clock.Now()) {
			h.t.Fatalf("upload created at %v, want %v", u.CreatedAt, h.clock.Now())
		}
		h.ok(h.s.AppendUploadPart(h.ctx, "app", "u1", 0, metadata.UploadPart{Key: "p0", Size: 10}, []byte("state 1")))
		h.clock.Advance(1e9)
		h.ok(h.s.AppendUploadPart(h.ctx, "app", "u1", 10, metadata.UploadPart{Key: "p1", Size: 5}, []byte("state 2")))
		got, err := h.s.GetUpload(h.ctx, "app", "u1")
		h.ok(err)
		want := []metadata.UploadPart{{Key: "p0", Size: 10}, {Key: "p1", Size: 5}}
		if got.Size != 15 || !slices.Equal(got.Parts, want) || string(got.HashState) != "state 2" || got.Algorithm != "sha256" ||
			!got.UpdatedAt.Equal(h.clock.Now()) || !got.CreatedAt.Equal(u.CreatedAt) {
			h.t.Fatalf("upload after two parts: %+v", got)
		}
	}},
	{"a part that does not start where the upload ends is refused", func(h *harness) {
		h.newUpload("app", "u1")
		h.ok(h.s.AppendUploadPart(h.ctx, "app", "u1", 0, metadata.UploadPart{Key: "p0", Size: 10}, []byte("s1")))
		h.is(h.s.AppendUploadPart(h.ctx, "app", "u1", 0, metadata.UploadPart{Key: "again", Size: 10}, []byte("s2")), metadata.ErrUploadConflict, "a part at 0 of an upload at 10")
		h.is(h.s.AppendUploadPart(h.ctx, "app", "missing", 0, metadata.UploadPart{Key: "p", Size: 1}, []byte("s")), metadata.ErrNotFound, "a part of a missing upload")
		if got, _ := h.s.GetUpload(h.ctx, "app", "u1"); got.Size != 10 || len(got.Parts) != 1 {
			h.t.Fatalf("upload after a refused part: %+v", got)
		}
	}},
	{"an upload is found only in its repository, until deleted", func(h *harness) {
		h.newUpload("app", "u1")
		_, err := h.s.GetUpload(h.ctx, "other", "u1")
		h.is(err, metadata.ErrNotFound, "GetUpload in another repository")
		if ok, err := h.s.UploadExists(h.ctx, "u1"); !ok || err != nil {
			h.t.Fatalf("UploadExists: %v, %v", ok, err)
		}
		h.ok(h.s.DeleteUpload(h.ctx, "u1"))
		_, err = h.s.GetUpload(h.ctx, "app", "u1")
		h.is(err, metadata.ErrNotFound, "GetUpload after delete")
		if ok, err := h.s.UploadExists(h.ctx, "u1"); ok || err != nil {
			h.t.Fatalf("UploadExists after delete: %v, %v", ok, err)
		}
		h.ok(h.s.DeleteUpload(h.ctx, "u1"))
	}},
	{"stale uploads are those not written to since the cutoff", func(h *harness) {
		h.newUpload("app", "old")
		h.newUpload("app", "touched")
		h.clock.Advance(3600e9)
		h.newUpload("app", "new")
		h.ok(h.s.TouchUpload(h.ctx, "touched"))
		stale, err := h.s.StaleUploads(h.ctx, h.clock.Now().Add(-60e9), 10)
		h.ok(err)
		if len(stale) != 1 || stale[0].ID != "old" {
			h.t.Fatalf("stale uploads: %+v, want only old", stale)
		}
		if some, _ := h.s.StaleUploads(h.ctx, h.clock.Now().Add(60e9), 2); len(some) != 2 {
			h.t.Fatalf("%d stale uploads with a limit of 2", len(some))
		}
	}},
	{"an owner finds its uploads by prefix", func(h *harness) {
		for _, id := range []string{"conv-1-a", "conv-1-b", "conv-10-a", "other"} {
			h.newUpload("app", id)
		}
		h.newUpload("elsewhere", "conv-1-c")
		ups, err := h.s.UploadsWithPrefix(h.ctx, "app", "conv-1-")
		h.ok(err)
		var ids []string
		for _, u := range ups {
			ids = append(ids, u.ID)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, []string{"conv-1-a", "conv-1-b"}) {
			h.t.Fatalf("uploads with prefix conv-1-: %v", ids)
		}
	}},
}

var profileCases = []testCase{
	{"a profile is kept per repository and replaced", func(h *harness) {
		b := h.blob("one", "layer")
		h.blob("two", "layer")
		h.ok(h.s.PutStartupProfile(h.ctx, "one", b.Digest, []byte(`[[0,10]]`)))
		h.clock.Advance(1e9)
		h.ok(h.s.PutStartupProfile(h.ctx, "one", b.Digest, []byte(`[[0,20]]`)))
		ranges, updated, err := h.s.StartupProfile(h.ctx, "one", b.Digest)
		h.ok(err)
		if string(ranges) != `[[0,20]]` || !updated.Equal(h.clock.Now()) {
			h.t.Fatalf("profile %s of %v", ranges, updated)
		}
		_, _, err = h.s.StartupProfile(h.ctx, "two", b.Digest)
		h.is(err, metadata.ErrNotFound, "the profile in another repository holding the blob")
	}},
	{"a profile needs its blob linked, and goes with the link", func(h *harness) {
		h.is(h.s.PutStartupProfile(h.ctx, "app", digestOf("absent"), []byte(`[]`)), metadata.ErrNotFound, "a profile of a blob not linked")
		b := h.blob("app", "layer")
		h.ok(h.s.PutStartupProfile(h.ctx, "app", b.Digest, []byte(`[[0,1]]`)))
		h.ok(h.s.UnlinkBlob(h.ctx, "app", b.Digest))
		_, _, err := h.s.StartupProfile(h.ctx, "app", b.Digest)
		h.is(err, metadata.ErrNotFound, "the profile of an unlinked blob")
	}},
	{"a profile is deleted once", func(h *harness) {
		b := h.blob("app", "layer")
		h.ok(h.s.PutStartupProfile(h.ctx, "app", b.Digest, []byte(`[[0,1]]`)))
		h.ok(h.s.DeleteStartupProfile(h.ctx, "app", b.Digest))
		h.is(h.s.DeleteStartupProfile(h.ctx, "app", b.Digest), metadata.ErrNotFound, "deleting the profile again")
		_, _, err := h.s.StartupProfile(h.ctx, "app", b.Digest)
		h.is(err, metadata.ErrNotFound, "a deleted profile")
	}},
}
