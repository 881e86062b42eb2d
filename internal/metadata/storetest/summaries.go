package storetest

import (
	"slices"
	"time"

	"github.com/sluicehq/sluice/internal/metadata"
)

const streamingType = "application/vnd.azure.artifact.streaming.v1"

var summaryCases = []testCase{
	{"a search lists the listable repositories whose name contains the words, in pages", func(h *harness) {
		for _, name := range []string{"team/web", "team/api", "tools/web_100%", "other"} {
			h.pushImage(name, name)
		}
		h.pushImage("team/hidden-web", "hidden")
		h.ok(h.s.UpdateRepository(h.ctx, "team/hidden-web", metadata.RepositoryPatch{Attributes: metadata.AttributesPatch{ListEnabled: boolPtr(false)}}, false))
		for _, c := range []struct {
			q    string
			want []string
		}{
			{"", []string{"other", "team/api", "team/web", "tools/web_100%"}},
			{"WEB", []string{"team/web", "tools/web_100%"}},
			{"_1", []string{"tools/web_100%"}}, // _ is no wildcard
			{"%", []string{"tools/web_100%"}},
			{"w_b", nil}, // would match "web" were _ a wildcard
		} {
			got, more, err := h.s.SearchRepositories(h.ctx, c.q, "", -1)
			h.ok(err)
			if !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) || more {
				h.t.Fatalf("search %q: %v (more %v), want %v", c.q, got, more, c.want)
			}
		}
		page, more, err := h.s.SearchRepositories(h.ctx, "team", "", 1)
		h.ok(err)
		next, more2, err := h.s.SearchRepositories(h.ctx, "team", page[0], 1)
		h.ok(err)
		if !slices.Equal(page, []string{"team/api"}) || !more || !slices.Equal(next, []string{"team/web"}) || more2 {
			h.t.Fatalf("pages %v (more %v), %v (more %v)", page, more, next, more2)
		}
	}},
	{"summaries carry counts, size and the last push, in the order asked", func(h *harness) {
		h.pushImage("a", "first", "v1")
		h.clock.Advance(time.Minute)
		h.pushImage("a", "second", "v2", "latest")
		h.pushImage("b", "only")
		got, err := h.s.RepositorySummaries(h.ctx, []string{"b", "missing", "a"})
		h.ok(err)
		if len(got) != 2 || got[0].Name != "b" || got[1].Name != "a" {
			h.t.Fatalf("summaries %+v", got)
		}
		a, err := h.s.GetRepository(h.ctx, "a")
		h.ok(err)
		s := got[1]
		if s.ManifestCount != 2 || s.TagCount != 3 || s.Size != a.Size || s.Size == 0 || !s.LastPush.Equal(h.clock.Now()) || !s.Attributes.ListEnabled {
			h.t.Fatalf("summary of a: %+v (GetRepository %+v)", s, a)
		}
	}},
	{"the largest repositories come first", func(h *harness) {
		h.push(image("small", "s", h.blob("small", "x")))
		h.push(image("big", "b", h.blob("big", "a much larger layer than the other")))
		h.push(image("mid", "m", h.blob("mid", "a larger layer")))
		got, err := h.s.LargestRepositories(h.ctx, 2)
		h.ok(err)
		big, err := h.s.GetRepository(h.ctx, "big")
		h.ok(err)
		if len(got) != 2 || got[0].Name != "big" || got[1].Name != "mid" || got[0].Size != big.Size {
			h.t.Fatalf("largest %+v (big is %d bytes)", got, big.Size)
		}
	}},
	{"artifact states count live streaming referrers and take the latest operation", func(h *harness) {
		done := h.pushImage("app", "done")
		h.push(referrer("app", "artifact", streamingType, done.Digest))
		failed := h.pushImage("app", "failed")
		op := h.enqueue("f1", kindConversion, "app", failed.Digest)
		claimed := h.claim(kindConversion, "w")
		if claimed.ID != op.ID {
			h.t.Fatalf("claimed %s", claimed.ID)
		}
		ok, err := h.s.FinishOperation(h.ctx, op.ID, "w", metadata.Operation{Status: metadata.StatusFailed})
		h.ok(err)
		if !ok {
			h.t.Fatal("finish refused")
		}
		h.clock.Advance(time.Second)
		running := h.pushImage("app", "running")
		h.enqueue("r1", kindConversion, "app", running.Digest)
		other := h.pushImage("app", "other")
		h.push(referrer("app", "signature", "application/vnd.example.sig", other.Digest))

		got, err := h.s.ArtifactStates(h.ctx, "app", streamingType, kindConversion, []string{done.Digest, failed.Digest, running.Digest, other.Digest})
		h.ok(err)
		want := map[string]metadata.ArtifactState{
			done.Digest:    {Artifacts: 1},
			failed.Digest:  {Operation: metadata.StatusFailed},
			running.Digest: {Operation: metadata.StatusNotStarted},
		}
		if len(got) != len(want) {
			h.t.Fatalf("states %+v, want %+v", got, want)
		}
		for d, w := range want {
			if got[d] != w {
				h.t.Fatalf("state of %s: %+v, want %+v", d, got[d], w)
			}
		}
	}},
}
