package nodestatus

import (
	"testing"
)

// The bytes fetched before the first container started are noted once per
// pull of a streamed layer, kept across a reopen, and cleared by the next
// pull that prepares the layer again.
func TestNoteStart(t *testing.T) {
	path := Path(t.TempDir())
	l := Open(path)
	for _, o := range []Outcome{
		{Image: "reg/app:1", Layer: "sha256:a", State: Streamed, MountSeconds: 0.25},
		{Image: "reg/app:1", Layer: "sha256:b", State: Downloaded, Reason: "no_artifact"},
	} {
		if err := l.Record(o); err != nil {
			t.Fatal(err)
		}
	}
	if !l.WantsStart("reg/app:1", "sha256:a") || l.WantsStart("reg/app:1", "sha256:b") {
		t.Error("WantsStart: want the streamed layer only")
	}
	for _, tc := range []struct {
		name         string
		image, layer string
		fetched      int64
		want         bool
	}{
		{name: "first container", image: "reg/app:1", layer: "sha256:a", fetched: 4096, want: true},
		{name: "a later container", image: "reg/app:1", layer: "sha256:a", fetched: 1 << 20, want: false},
		{name: "a downloaded layer", image: "reg/app:1", layer: "sha256:b", fetched: 1, want: false},
		{name: "a layer of another image", image: "reg/other:1", layer: "sha256:a", fetched: 1, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := l.NoteStart(tc.image, tc.layer, tc.fetched)
			if err != nil || got != tc.want {
				t.Errorf("NoteStart(%s, %s) = %v, %v; want %v", tc.image, tc.layer, got, err, tc.want)
			}
		})
	}
	if l.WantsStart("reg/app:1", "sha256:a") {
		t.Error("WantsStart after the first container was noted")
	}
	out, err := Read(path)
	if err != nil || len(out) != 2 {
		t.Fatalf("read back %+v, %v", out, err)
	}
	if a := out[0]; a.FetchedBeforeStart == nil || *a.FetchedBeforeStart != 4096 || a.MountSeconds != 0.25 {
		t.Errorf("streamed layer read back as %+v", a)
	}
	if b := out[1]; b.FetchedBeforeStart != nil {
		t.Errorf("downloaded layer has bytes fetched before start: %d", *b.FetchedBeforeStart)
	}

	// A process opening the record again sees it; a new pull of the layer
	// starts over.
	l = Open(path)
	if ok, _ := l.NoteStart("reg/app:1", "sha256:a", 1); ok {
		t.Error("reopened, the record noted a second first container")
	}
	if err := l.Record(Outcome{Image: "reg/app:1", Layer: "sha256:a", State: Streamed}); err != nil {
		t.Fatal(err)
	}
	if ok, err := l.NoteStart("reg/app:1", "sha256:a", 8192); !ok || err != nil {
		t.Errorf("after a new pull: NoteStart = %v, %v; want it noted", ok, err)
	}
}
