package storetest

import (
	"cmp"
	"slices"

	"github.com/sluicehq/sluice/internal/metadata"
)

var manifestCases = []testCase{
	{"a manifest is read back by tag and by digest", func(h *harness) {
		b := h.blob("app", "layer")
		m := image("app", "m", b)
		m.OS, m.Architecture = "linux", "arm64"
		h.push(m, "v1")
		for _, ref := range [][2]string{{"v1", ""}, {"", m.Digest}} {
			got, err := h.s.GetManifest(h.ctx, "app", ref[0], ref[1], true)
			h.ok(err)
			if got.Digest != m.Digest || got.MediaType != m.MediaType || got.ArtifactType != m.ArtifactType || got.Size != m.Size ||
				string(got.Payload) != string(m.Payload) || got.OS != "linux" || got.Architecture != "arm64" ||
				got.ConfigMediaType != m.ConfigMediaType || !got.Readable || !got.CreatedAt.Equal(h.clock.Now()) {
				h.t.Fatalf("manifest read by %q: %+v", ref, got)
			}
		}
		head, err := h.s.GetManifest(h.ctx, "app", "", m.Digest, false)
		h.ok(err)
		if head.Payload != nil || head.Size != m.Size {
			h.t.Fatalf("manifest read without payload: %d bytes of payload, size %d", len(head.Payload), head.Size)
		}
		for _, ref := range [][3]string{{"app", "v2", ""}, {"app", "", digestOf("none")}, {"none", "v1", ""}} {
			_, err := h.s.GetManifest(h.ctx, ref[0], ref[1], ref[2], true)
			h.is(err, metadata.ErrNotFound, "GetManifest of "+ref[0]+":"+ref[1]+ref[2])
		}
	}},
	{"a manifest is refused, and nothing written, unless what it references is there", func(h *harness) {
		b := h.blob("app", "layer")
		h.is(h.s.PutManifest(h.ctx, image("app", "missing", metadata.BlobRef{Digest: digestOf("absent"), Size: 1}), []string{"t"}, nil), metadata.ErrMissingBlob, "a missing blob")
		h.is(h.s.PutManifest(h.ctx, image("app", "size", metadata.BlobRef{Digest: b.Digest, Size: b.Size + 1}), []string{"t"}, nil), metadata.ErrSizeMismatch, "a wrong size")
		index := image("app", "index")
		index.Children = []string{digestOf("no such manifest")}
		h.is(h.s.PutManifest(h.ctx, index, []string{"t"}, nil), metadata.ErrMissingManifest, "a missing child")
		h.is(h.s.PutManifest(h.ctx, image("other", "elsewhere", b), nil, nil), metadata.ErrMissingBlob, "a blob of another repository")
		if tags, _, err := h.s.ListTags(h.ctx, "app", "", -1); err != nil || len(tags) != 0 {
			h.t.Fatalf("tags after refused pushes: %v, %v", tags, err)
		}
		_, err := h.s.GetRepository(h.ctx, "other")
		h.is(err, metadata.ErrNotFound, "the repository of a refused first push")
	}},
	{"an index is stored once its children are", func(h *harness) {
		child := h.pushImage("app", "child")
		index := image("app", "index")
		index.MediaType, index.Children = "application/vnd.oci.image.index.v1+json", []string{child.Digest}
		h.push(index, "multi")
		if got, err := h.s.GetManifest(h.ctx, "app", "multi", "", false); err != nil || got.Digest != index.Digest {
			h.t.Fatalf("index by tag: %v, %v", got, err)
		}
	}},
	{"pushing a manifest again moves only the tags", func(h *harness) {
		one := h.pushImage("app", "one", "latest")
		two := h.pushImage("app", "two", "latest")
		got, err := h.s.GetManifest(h.ctx, "app", "latest", "", false)
		h.ok(err)
		if got.Digest != two.Digest {
			h.t.Fatalf("latest is %s, want the second push %s", got.Digest, two.Digest)
		}
		h.clock.Advance(1e9)
		h.push(one, "latest", "stable")
		got, err = h.s.GetManifest(h.ctx, "app", "stable", "", false)
		h.ok(err)
		if got.Digest != one.Digest || got.CreatedAt.Equal(h.clock.Now()) {
			h.t.Fatalf("stable: %s created %v; want %s created before", got.Digest, got.CreatedAt, one.Digest)
		}
	}},
	{"tags are listed in name order, in pages, without unlistable ones", func(h *harness) {
		h.pushImage("app", "m", "b", "a", "d", "c", "hidden")
		h.ok(h.s.UpdateTagAttributes(h.ctx, "app", "hidden", metadata.AttributesPatch{ListEnabled: boolPtr(false)}))
		all, more, err := h.s.ListTags(h.ctx, "app", "", -1)
		h.ok(err)
		if !slices.Equal(all, []string{"a", "b", "c", "d"}) || more {
			h.t.Fatalf("tags %v (more %v)", all, more)
		}
		page, more, err := h.s.ListTags(h.ctx, "app", "a", 2)
		h.ok(err)
		if !slices.Equal(page, []string{"b", "c"}) || !more {
			h.t.Fatalf("page after a: %v (more %v)", page, more)
		}
		page, more, err = h.s.ListTags(h.ctx, "app", "c", 2)
		h.ok(err)
		if !slices.Equal(page, []string{"d"}) || more {
			h.t.Fatalf("last page: %v (more %v)", page, more)
		}
		_, _, err = h.s.ListTags(h.ctx, "none", "", -1)
		h.is(err, metadata.ErrNotFound, "ListTags of a missing repository")
	}},
	{"referrers are listed by subject in digest order, of one type if asked", func(h *harness) {
		subject := h.pushImage("app", "subject")
		var sboms []string
		for _, note := range []string{"s1", "s2", "s3"} {
			r := referrer("app", note, "application/vnd.example.sbom", subject.Digest)
			r.Annotations = map[string]string{"note": note}
			sboms = append(sboms, h.push(r).Digest)
		}
		sig := h.push(referrer("app", "sig", "application/vnd.example.signature", subject.Digest))
		h.push(referrer("app", "elsewhere", "application/vnd.example.sbom", digestOf("another subject")))
		slices.Sort(sboms)
		all, err := h.s.Referrers(h.ctx, "app", subject.Digest, "")
		h.ok(err)
		if len(all) != 4 || !slices.IsSortedFunc(all, func(a, b metadata.Manifest) int { return cmp.Compare(a.Digest, b.Digest) }) {
			h.t.Fatalf("%d referrers, or not in digest order: %v", len(all), all)
		}
		only, err := h.s.Referrers(h.ctx, "app", subject.Digest, "application/vnd.example.sbom")
		h.ok(err)
		var got []string
		for _, r := range only {
			got = append(got, r.Digest)
			if r.Subject != subject.Digest || r.Size == 0 || r.Annotations["note"] == "" {
				h.t.Fatalf("referrer %+v", r)
			}
		}
		if !slices.Equal(got, sboms) {
			h.t.Fatalf("sbom referrers %v, want %v", got, sboms)
		}
		sigs, err := h.s.Referrers(h.ctx, "app", subject.Digest, "application/vnd.example.signature")
		h.ok(err)
		if len(sigs) != 1 || sigs[0].Digest != sig.Digest || sigs[0].Annotations != nil {
			h.t.Fatalf("signature referrers: %+v", sigs)
		}
		none, err := h.s.Referrers(h.ctx, "app", digestOf("nobody"), "")
		h.ok(err)
		if len(none) != 0 {
			h.t.Fatalf("referrers of a digest nothing refers to: %v", none)
		}
	}},
	{"read-disabled repositories, manifests and tags make a manifest unreadable", func(h *harness) {
		m := h.pushImage("app", "m", "v1", "v2")
		readable := func(tag string) bool {
			h.t.Helper()
			got, err := h.s.GetManifest(h.ctx, "app", tag, map[bool]string{true: m.Digest}[tag == ""], false)
			h.ok(err)
			return got.Readable
		}
		h.ok(h.s.UpdateTagAttributes(h.ctx, "app", "v1", metadata.AttributesPatch{ReadEnabled: boolPtr(false)}))
		if readable("v1") || !readable("v2") || !readable("") {
			h.t.Fatal("a read-disabled tag hides more or less than itself")
		}
		h.ok(h.s.UpdateManifestAttributes(h.ctx, "app", m.Digest, metadata.AttributesPatch{ReadEnabled: boolPtr(false)}))
		if readable("v2") || readable("") {
			h.t.Fatal("a read-disabled manifest is readable")
		}
		h.ok(h.s.UpdateManifestAttributes(h.ctx, "app", m.Digest, metadata.AttributesPatch{ReadEnabled: boolPtr(true)}))
		h.ok(h.s.UpdateRepository(h.ctx, "app", metadata.RepositoryPatch{Attributes: metadata.AttributesPatch{ReadEnabled: boolPtr(false)}}, false))
		if readable("v2") || readable("") {
			h.t.Fatal("a manifest of a read-disabled repository is readable")
		}
	}},
	{"a write-disabled tag stays where it points", func(h *harness) {
		one := h.pushImage("app", "one", "v1")
		h.ok(h.s.UpdateTagAttributes(h.ctx, "app", "v1", metadata.AttributesPatch{WriteEnabled: boolPtr(false)}))
		h.is(h.s.PutManifest(h.ctx, image("app", "two"), []string{"v1"}, nil), metadata.ErrDenied, "moving a write-disabled tag")
		h.ok(h.s.PutManifest(h.ctx, one, []string{"v1"}, nil))
	}},
	{"a push to a streaming repository enqueues its operation once", func(h *harness) {
		h.ok(h.s.UpdateRepository(h.ctx, "auto", metadata.RepositoryPatch{Streaming: boolPtr(true)}, true))
		m := image("auto", "m", h.blob("auto", "layer"))
		h.ok(h.s.PutManifest(h.ctx, m, []string{"v1"}, conversionOf("first", m)))
		h.ok(h.s.PutManifest(h.ctx, m, []string{"v2"}, conversionOf("second", m)))
		op, err := h.s.ActiveOperation(h.ctx, kindConversion, "auto", m.Digest)
		h.ok(err)
		if op.ID != "first" || op.Status != metadata.StatusNotStarted || op.StartedBy != metadata.AutoStreaming {
			h.t.Fatalf("enqueued: %+v", op)
		}
		_, err = h.s.GetOperation(h.ctx, "second")
		h.is(err, metadata.ErrNotFound, "a second operation for an image with one active")

		plain := image("plain", "m", h.blob("plain", "layer"))
		h.ok(h.s.PutManifest(h.ctx, plain, []string{"v1"}, conversionOf("plain", plain)))
		_, err = h.s.GetOperation(h.ctx, "plain")
		h.is(err, metadata.ErrNotFound, "an operation enqueued by a push to a repository that does not stream")
	}},
}
