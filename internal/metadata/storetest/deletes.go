package storetest

import (
	"slices"

	"github.com/sluicehq/sluice/internal/metadata"
)

// owned is the artifact type the cases treat as owned by its subject.
const owned = "application/vnd.example.made-from-subject"

var deleteCases = []testCase{
	{"deleting a tag leaves its manifest", func(h *harness) {
		m := h.pushImage("app", "m", "v1", "v2")
		h.ok(h.s.DeleteTag(h.ctx, "app", "v1", false))
		_, err := h.s.GetManifest(h.ctx, "app", "v1", "", false)
		h.is(err, metadata.ErrNotFound, "the deleted tag")
		if _, err := h.s.GetManifest(h.ctx, "app", "v2", m.Digest, false); err != nil {
			h.t.Fatalf("the manifest of a deleted tag: %v", err)
		}
		h.is(h.s.DeleteTag(h.ctx, "app", "v1", false), metadata.ErrNotFound, "deleting the tag again")
		h.is(h.s.DeleteTag(h.ctx, "none", "v1", false), metadata.ErrNotFound, "deleting a tag of a missing repository")
		deleted, err := h.s.DeletedTags(h.ctx, "app")
		h.ok(err)
		if len(deleted) != 0 {
			h.t.Fatalf("a hard-deleted tag is listed as deleted: %+v", deleted)
		}
	}},
	{"a soft-deleted tag is listed as deleted", func(h *harness) {
		m := h.pushImage("app", "m", "v1")
		h.ok(h.s.DeleteTag(h.ctx, "app", "v1", true))
		deleted, err := h.s.DeletedTags(h.ctx, "app")
		h.ok(err)
		if len(deleted) != 1 || deleted[0].Name != "v1" || deleted[0].Digest != m.Digest || !deleted[0].DeletedAt.Equal(h.clock.Now()) {
			h.t.Fatalf("deleted tags: %+v", deleted)
		}
	}},
	{"locked tags, manifests and repositories refuse deletes", func(h *harness) {
		m := h.pushImage("app", "m", "locked", "free")
		h.ok(h.s.UpdateTagAttributes(h.ctx, "app", "locked", metadata.AttributesPatch{WriteEnabled: boolPtr(false)}))
		h.is(h.s.DeleteTag(h.ctx, "app", "locked", false), metadata.ErrDenied, "deleting a write-disabled tag")
		_, err := h.s.DeleteManifest(h.ctx, "app", m.Digest, metadata.Deletion{})
		h.is(err, metadata.ErrDenied, "deleting a manifest a locked tag points at")
		_, err = h.s.DeleteRepository(h.ctx, "app", metadata.Deletion{})
		h.is(err, metadata.ErrDenied, "deleting a repository with a locked tag")
		h.ok(h.s.UpdateTagAttributes(h.ctx, "app", "locked", metadata.AttributesPatch{WriteEnabled: boolPtr(true)}))

		h.ok(h.s.UpdateManifestAttributes(h.ctx, "app", m.Digest, metadata.AttributesPatch{DeleteEnabled: boolPtr(false)}))
		_, err = h.s.DeleteManifest(h.ctx, "app", m.Digest, metadata.Deletion{})
		h.is(err, metadata.ErrDenied, "deleting a delete-disabled manifest")
		_, err = h.s.DeleteRepository(h.ctx, "app", metadata.Deletion{})
		h.is(err, metadata.ErrDenied, "deleting a repository with a locked manifest")
		h.ok(h.s.UpdateManifestAttributes(h.ctx, "app", m.Digest, metadata.AttributesPatch{DeleteEnabled: boolPtr(true)}))

		h.ok(h.s.UpdateRepository(h.ctx, "app", metadata.RepositoryPatch{Attributes: metadata.AttributesPatch{DeleteEnabled: boolPtr(false)}}, false))
		h.is(h.s.DeleteTag(h.ctx, "app", "free", false), metadata.ErrDenied, "deleting a tag of a delete-disabled repository")
		_, err = h.s.DeleteManifest(h.ctx, "app", m.Digest, metadata.Deletion{})
		h.is(err, metadata.ErrDenied, "deleting a manifest of a delete-disabled repository")
	}},
	{"deleting a manifest takes its tags and the referrers it owns", func(h *harness) {
		m := h.pushImage("app", "m", "v1")
		made := h.push(referrer("app", "made", owned, m.Digest))
		other := h.push(referrer("app", "other", "application/vnd.example.sbom", m.Digest))
		deleted, err := h.s.DeleteManifest(h.ctx, "app", m.Digest, metadata.Deletion{OwnedReferrers: []string{owned, "application/vnd.example.unused"}})
		h.ok(err)
		if !slices.Equal(deleted, []string{m.Digest, made.Digest}) {
			h.t.Fatalf("deleted %v, want the manifest then its owned referrer", deleted)
		}
		for _, d := range []string{m.Digest, made.Digest} {
			_, err := h.s.GetManifest(h.ctx, "app", "", d, false)
			h.is(err, metadata.ErrNotFound, "a deleted manifest")
		}
		_, err = h.s.GetManifest(h.ctx, "app", "v1", "", false)
		h.is(err, metadata.ErrNotFound, "the tag of a deleted manifest")
		if _, err := h.s.GetManifest(h.ctx, "app", "", other.Digest, false); err != nil {
			h.t.Fatalf("a referrer the manifest does not own: %v", err)
		}
		_, err = h.s.DeleteManifest(h.ctx, "app", m.Digest, metadata.Deletion{})
		h.is(err, metadata.ErrNotFound, "deleting the manifest again")
		_, err = h.s.DeleteManifest(h.ctx, "none", m.Digest, metadata.Deletion{})
		h.is(err, metadata.ErrNotFound, "deleting a manifest of a missing repository")
	}},
	{"a soft-deleted manifest keeps its blobs and cannot be pushed again", func(h *harness) {
		layer := h.blob("app", "layer")
		m := h.push(image("app", "m", layer), "v1")
		made := h.push(referrer("app", "made", owned, m.Digest))
		h.clock.Advance(1e9)
		deleted, err := h.s.DeleteManifest(h.ctx, "app", m.Digest, metadata.Deletion{Soft: true, OwnedReferrers: []string{owned}})
		h.ok(err)
		if !slices.Equal(deleted, []string{m.Digest, made.Digest}) {
			h.t.Fatalf("deleted %v", deleted)
		}
		_, err = h.s.GetManifest(h.ctx, "app", "", m.Digest, false)
		h.is(err, metadata.ErrNotFound, "a soft-deleted manifest")
		manifests, err := h.s.DeletedManifests(h.ctx, "app")
		h.ok(err)
		if len(manifests) != 1 || manifests[0].Digest != m.Digest || manifests[0].Name != "app" || !manifests[0].DeletedAt.Equal(h.clock.Now()) {
			h.t.Fatalf("deleted manifests: %+v; want only %s, its owned referrer gone for good", manifests, m.Digest)
		}
		tags, err := h.s.DeletedTags(h.ctx, "app")
		h.ok(err)
		if len(tags) != 1 || tags[0].Name != "v1" {
			h.t.Fatalf("deleted tags: %+v", tags)
		}
		h.is(h.s.PutManifest(h.ctx, m, nil, nil), metadata.ErrManifestDeleted, "pushing a soft-deleted manifest")
		h.clock.Advance(48 * 3600e9)
		n, err := h.s.UnlinkUnreferencedBlobs(h.ctx, h.clock.Now())
		h.ok(err)
		if _, _, err := h.s.BlobSize(h.ctx, "app", layer.Digest); n != 0 || err != nil {
			h.t.Fatalf("a soft-deleted manifest's blob was unlinked (%d unlinked): %v", n, err)
		}
		payloadType, payload, err := h.s.ManifestPayload(h.ctx, "app", m.Digest)
		h.ok(err)
		if payloadType != m.MediaType || string(payload) != string(m.Payload) {
			h.t.Fatalf("payload of the deleted manifest: %s %s", payloadType, payload)
		}
		_, _, err = h.s.ManifestPayload(h.ctx, "app", made.Digest)
		h.is(err, metadata.ErrNotFound, "the payload of an owned referrer deleted for good")
	}},
	{"a restore brings a manifest back, tagged as asked", func(h *harness) {
		m := h.pushImage("app", "m", "v1")
		_, err := h.s.DeleteManifest(h.ctx, "app", m.Digest, metadata.Deletion{Soft: true})
		h.ok(err)
		h.ok(h.s.RestoreManifest(h.ctx, "app", m.Digest, "v1", false, nil))
		if got, err := h.s.GetManifest(h.ctx, "app", "v1", "", false); err != nil || got.Digest != m.Digest {
			h.t.Fatalf("restored manifest by tag: %v, %v", got, err)
		}
		for _, list := range []func() ([]metadata.Deleted, error){
			func() ([]metadata.Deleted, error) { return h.s.DeletedManifests(h.ctx, "app") },
			func() ([]metadata.Deleted, error) { return h.s.DeletedTags(h.ctx, "app") },
		} {
			if d, err := list(); err != nil || len(d) != 0 {
				h.t.Fatalf("still listed as deleted after the restore: %+v, %v", d, err)
			}
		}
		h.is(h.s.RestoreManifest(h.ctx, "app", m.Digest, "", false, nil), metadata.ErrNotFound, "restoring a live manifest")
		h.is(h.s.RestoreManifest(h.ctx, "none", m.Digest, "", false, nil), metadata.ErrNotFound, "restoring in a missing repository")
	}},
	{"a restore moves a tag only by force, and waits for the subject", func(h *harness) {
		subject := h.pushImage("app", "subject")
		ref := h.push(referrer("app", "sbom", "application/vnd.example.sbom", subject.Digest))
		old := h.pushImage("app", "old")
		_, err := h.s.DeleteManifest(h.ctx, "app", old.Digest, metadata.Deletion{Soft: true})
		h.ok(err)
		h.pushImage("app", "new", "latest")
		h.is(h.s.RestoreManifest(h.ctx, "app", old.Digest, "latest", false, nil), metadata.ErrRestoreRefused, "restoring onto a tag in use")
		h.ok(h.s.RestoreManifest(h.ctx, "app", old.Digest, "latest", true, nil))
		if got, _ := h.s.GetManifest(h.ctx, "app", "latest", "", false); got == nil || got.Digest != old.Digest {
			h.t.Fatalf("latest after a forced restore: %+v", got)
		}
		for _, d := range []string{ref.Digest, subject.Digest} {
			_, err := h.s.DeleteManifest(h.ctx, "app", d, metadata.Deletion{Soft: true})
			h.ok(err)
		}
		h.is(h.s.RestoreManifest(h.ctx, "app", ref.Digest, "", false, nil), metadata.ErrRestoreRefused, "restoring a referrer before its subject")
		h.ok(h.s.RestoreManifest(h.ctx, "app", subject.Digest, "", false, nil))
		h.ok(h.s.RestoreManifest(h.ctx, "app", ref.Digest, "", false, nil))
	}},
	{"a restore in a streaming repository enqueues the conversion", func(h *harness) {
		h.ok(h.s.UpdateRepository(h.ctx, "auto", metadata.RepositoryPatch{Streaming: boolPtr(true)}, true))
		m := h.pushImage("auto", "m")
		_, err := h.s.DeleteManifest(h.ctx, "auto", m.Digest, metadata.Deletion{Soft: true})
		h.ok(err)
		h.ok(h.s.RestoreManifest(h.ctx, "auto", m.Digest, "", false, conversionOf("again", m)))
		if op, err := h.s.ActiveOperation(h.ctx, kindConversion, "auto", m.Digest); err != nil || op.ID != "again" {
			h.t.Fatalf("operation after the restore: %+v, %v", op, err)
		}
	}},
	{"deleting a repository takes everything in it", func(h *harness) {
		one := h.pushImage("app", "one", "v1")
		two := h.pushImage("app", "two")
		deleted, err := h.s.DeleteRepository(h.ctx, "app", metadata.Deletion{})
		h.ok(err)
		want := []string{one.Digest, two.Digest}
		slices.Sort(want)
		if !slices.Equal(deleted, want) {
			h.t.Fatalf("deleted %v, want %v", deleted, want)
		}
		_, err = h.s.GetRepository(h.ctx, "app")
		h.is(err, metadata.ErrNotFound, "a deleted repository")
		if d, err := h.s.DeletedRepositories(h.ctx); err != nil || len(d) != 0 {
			h.t.Fatalf("a hard-deleted repository is listed as deleted: %+v, %v", d, err)
		}
	}},
	{"a soft-deleted repository is listed as deleted and can be restored", func(h *harness) {
		m := h.pushImage("app", "m", "v1")
		made := h.push(referrer("app", "made", owned, m.Digest))
		created := h.clock.Now()
		h.clock.Advance(1e9)
		deleted, err := h.s.DeleteRepository(h.ctx, "app", metadata.Deletion{Soft: true, OwnedReferrers: []string{owned}})
		h.ok(err)
		if !slices.Contains(deleted, m.Digest) || !slices.Contains(deleted, made.Digest) {
			h.t.Fatalf("deleted %v, want %s and %s", deleted, m.Digest, made.Digest)
		}
		repos, err := h.s.DeletedRepositories(h.ctx)
		h.ok(err)
		if len(repos) != 1 || repos[0].Name != "app" || !repos[0].CreatedAt.Equal(created) || !repos[0].DeletedAt.Equal(h.clock.Now()) {
			h.t.Fatalf("deleted repositories: %+v", repos)
		}
		if names, _, err := h.s.ListRepositories(h.ctx, "", -1); err != nil || len(names) != 0 {
			h.t.Fatalf("catalog after a soft delete: %v, %v", names, err)
		}
		h.ok(h.s.RestoreManifest(h.ctx, "app", m.Digest, "v1", false, nil))
		if names, _, _ := h.s.ListRepositories(h.ctx, "", -1); !slices.Equal(names, []string{"app"}) {
			h.t.Fatalf("catalog after a restore: %v", names)
		}
	}},
	{"a purge removes for good what was deleted before the cutoff", func(h *harness) {
		old := h.pushImage("app", "old", "old")
		h.pushImage("gone", "gone")
		_, err := h.s.DeleteManifest(h.ctx, "app", old.Digest, metadata.Deletion{Soft: true})
		h.ok(err)
		_, err = h.s.DeleteRepository(h.ctx, "gone", metadata.Deletion{Soft: true})
		h.ok(err)
		h.clock.Advance(3600e9)
		recent := h.pushImage("app", "recent", "recent")
		_, err = h.s.DeleteManifest(h.ctx, "app", recent.Digest, metadata.Deletion{Soft: true})
		h.ok(err)
		n, err := h.s.PurgeDeleted(h.ctx, h.clock.Now().Add(-60e9))
		h.ok(err)
		if n != 2 {
			h.t.Fatalf("purged %d manifests, want 2", n)
		}
		manifests, _ := h.s.DeletedManifests(h.ctx, "app")
		tags, _ := h.s.DeletedTags(h.ctx, "app")
		repos, _ := h.s.DeletedRepositories(h.ctx)
		if len(manifests) != 1 || manifests[0].Digest != recent.Digest || len(tags) != 1 || tags[0].Name != "recent" || len(repos) != 0 {
			h.t.Fatalf("after the purge: manifests %+v, tags %+v, repositories %+v", manifests, tags, repos)
		}
		h.is(h.s.RestoreManifest(h.ctx, "app", old.Digest, "", false, nil), metadata.ErrNotFound, "restoring a purged manifest")
	}},
}
