package snapshotter

import (
	"encoding/json"
	"path/filepath"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/sluicehq/sluice/internal/nodestatus"
)

func TestImageStreamingInfo(t *testing.T) {
	path := nodestatus.Path(t.TempDir())
	l := nodestatus.Open(path)
	for _, o := range []nodestatus.Outcome{
		{Image: "reg/app:1", Layer: "sha256:a", State: nodestatus.Streamed, MountSeconds: 0.125},
		{Image: "reg/app@sha256:d", Layer: "sha256:b", State: nodestatus.Downloaded, Reason: ReasonUnauthorized},
		{Image: "reg/app:1", Layer: "sha256:e", State: nodestatus.Streamed, MountSeconds: 0.5},
		{Image: "reg/other:1", Layer: "sha256:c", State: nodestatus.Streamed},
	} {
		if err := l.Record(o); err != nil {
			t.Fatal(err)
		}
	}
	for layer, fetched := range map[string]int64{"sha256:a": 3000, "sha256:e": 4000} {
		if ok, err := l.NoteStart("reg/app:1", layer, fetched); !ok || err != nil {
			t.Fatalf("NoteStart(%s) = %v, %v", layer, ok, err)
		}
	}
	info := ImageStreamingInfo(path)
	got := info(&runtimeapi.Image{RepoTags: []string{"reg/app:1"}, RepoDigests: []string{"reg/app@sha256:d"}})
	var v imageStreaming
	if err := json.Unmarshal([]byte(got[StreamingInfoKey]), &v); err != nil {
		t.Fatalf("%q: %v", got, err)
	}
	if v.Streamed != 2 || v.Downloaded != 1 || len(v.Layers) != 3 || v.Layers[1].Reason != ReasonUnauthorized {
		t.Errorf("info of reg/app: %+v", v)
	}
	if v.FetchedBeforeStart == nil || *v.FetchedBeforeStart != 7000 {
		t.Errorf("info of reg/app: fetched before start %v, want the layers' 7000", v.FetchedBeforeStart)
	}
	if a := v.Layers[0]; a.MountSeconds != 0.125 || a.FetchedBeforeStart == nil || *a.FetchedBeforeStart != 3000 {
		t.Errorf("info of reg/app's streamed layer: %+v", a)
	}
	if b := v.Layers[1]; b.MountSeconds != 0 || b.FetchedBeforeStart != nil {
		t.Errorf("info of reg/app's downloaded layer: %+v", b)
	}
	if got := info(&runtimeapi.Image{RepoTags: []string{"reg/unknown:1"}}); got != nil {
		t.Errorf("an image never pulled through the snapshotter got %v", got)
	}
	if got := ImageStreamingInfo(filepath.Join(t.TempDir(), "none.json"))(&runtimeapi.Image{RepoTags: []string{"reg/app:1"}}); got != nil {
		t.Errorf("without a status file: %v", got)
	}
}
