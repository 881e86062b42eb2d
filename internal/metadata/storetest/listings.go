package storetest

import (
	"slices"

	"github.com/sluicehq/sluice/internal/metadata"
)

var listingCases = []testCase{
	{"tag infos carry digests, times and attributes, in pages", func(h *harness) {
		m := h.pushImage("app", "m", "b", "a", "c")
		h.clock.Advance(1e9)
		h.ok(h.s.UpdateTagAttributes(h.ctx, "app", "b", metadata.AttributesPatch{DeleteEnabled: boolPtr(false)}))
		page, more, err := h.s.Tags(h.ctx, "app", "", "", 2)
		h.ok(err)
		if len(page) != 2 || !more || page[0].Name != "a" || page[1].Name != "b" || page[0].Digest != m.Digest {
			h.t.Fatalf("first page of tag infos: %+v (more %v)", page, more)
		}
		if b := page[1]; b.Attributes.DeleteEnabled || !b.Attributes.WriteEnabled || !b.UpdatedAt.Equal(h.clock.Now()) || b.CreatedAt.Equal(h.clock.Now()) {
			h.t.Fatalf("tag b after its attributes changed: %+v", b)
		}
		rest, more, err := h.s.Tags(h.ctx, "app", "", "b", -1)
		h.ok(err)
		if len(rest) != 1 || rest[0].Name != "c" || more {
			h.t.Fatalf("tag infos after b: %+v (more %v)", rest, more)
		}
	}},
	{"one tag info is found by name, even unlistable", func(h *harness) {
		h.pushImage("app", "m", "v1")
		h.ok(h.s.UpdateTagAttributes(h.ctx, "app", "v1", metadata.AttributesPatch{ListEnabled: boolPtr(false)}))
		one, _, err := h.s.Tags(h.ctx, "app", "v1", "", -1)
		h.ok(err)
		if len(one) != 1 || one[0].Attributes.ListEnabled {
			h.t.Fatalf("tag v1: %+v", one)
		}
		listed, _, err := h.s.Tags(h.ctx, "app", "", "", -1)
		h.ok(err)
		if len(listed) != 0 {
			h.t.Fatalf("an unlistable tag is listed: %+v", listed)
		}
		_, _, err = h.s.Tags(h.ctx, "app", "v2", "", -1)
		h.is(err, metadata.ErrNotFound, "Tags of a missing tag")
		_, _, err = h.s.Tags(h.ctx, "none", "", "", -1)
		h.is(err, metadata.ErrNotFound, "Tags of a missing repository")
		h.is(h.s.UpdateTagAttributes(h.ctx, "app", "v2", metadata.AttributesPatch{ListEnabled: boolPtr(false)}), metadata.ErrNotFound, "UpdateTagAttributes of a missing tag")
		h.is(h.s.UpdateTagAttributes(h.ctx, "none", "v1", metadata.AttributesPatch{ListEnabled: boolPtr(false)}), metadata.ErrNotFound, "UpdateTagAttributes in a missing repository")
	}},
	{"manifest infos carry image sizes and tags, in digest order", func(h *harness) {
		layer := h.blob("app", "a layer of some size")
		config := h.blob("app", "config")
		m := h.push(image("app", "m", layer, config), "v1", "latest")
		other := h.pushImage("app", "other")
		infos, more, err := h.s.Manifests(h.ctx, "app", "", "", -1)
		h.ok(err)
		if len(infos) != 2 || more || infos[0].Digest > infos[1].Digest {
			h.t.Fatalf("manifest infos: %+v (more %v)", infos, more)
		}
		one, _, err := h.s.Manifests(h.ctx, "app", m.Digest, "", -1)
		h.ok(err)
		got := one[0]
		slices.Sort(got.Tags)
		if got.ImageSize != m.Size+layer.Size+config.Size || !slices.Equal(got.Tags, []string{"latest", "v1"}) ||
			got.MediaType != m.MediaType || got.ConfigMediaType != m.ConfigMediaType || !got.Attributes.ListEnabled {
			h.t.Fatalf("manifest info: %+v; want image size %d and tags [latest v1]", got, m.Size+layer.Size+config.Size)
		}
		untagged, _, err := h.s.Manifests(h.ctx, "app", other.Digest, "", -1)
		h.ok(err)
		if untagged[0].Tags == nil || len(untagged[0].Tags) != 0 {
			h.t.Fatalf("an untagged manifest's tags: %#v, want an empty list", untagged[0].Tags)
		}
		first, more, err := h.s.Manifests(h.ctx, "app", "", "", 1)
		h.ok(err)
		rest, last, err := h.s.Manifests(h.ctx, "app", "", first[0].Digest, 1)
		h.ok(err)
		if !more || last || rest[0].Digest != infos[1].Digest {
			h.t.Fatalf("pages of one manifest info: %v then %v", first, rest)
		}
	}},
	{"manifest attributes change on live manifests only", func(h *harness) {
		m := h.pushImage("app", "m")
		h.ok(h.s.UpdateManifestAttributes(h.ctx, "app", m.Digest, metadata.AttributesPatch{ListEnabled: boolPtr(false)}))
		listed, _, err := h.s.Manifests(h.ctx, "app", "", "", -1)
		h.ok(err)
		if len(listed) != 0 {
			h.t.Fatalf("an unlistable manifest is listed: %+v", listed)
		}
		if one, _, err := h.s.Manifests(h.ctx, "app", m.Digest, "", -1); err != nil || one[0].Attributes.ListEnabled {
			h.t.Fatalf("the unlistable manifest by digest: %+v, %v", one, err)
		}
		_, _, err = h.s.Manifests(h.ctx, "app", digestOf("none"), "", -1)
		h.is(err, metadata.ErrNotFound, "Manifests of a missing digest")
		_, _, err = h.s.Manifests(h.ctx, "none", "", "", -1)
		h.is(err, metadata.ErrNotFound, "Manifests of a missing repository")
		_, err = h.s.DeleteManifest(h.ctx, "app", m.Digest, metadata.Deletion{Soft: true})
		h.ok(err)
		h.is(h.s.UpdateManifestAttributes(h.ctx, "app", m.Digest, metadata.AttributesPatch{ListEnabled: boolPtr(true)}), metadata.ErrNotFound, "UpdateManifestAttributes of a deleted manifest")
	}},
}
