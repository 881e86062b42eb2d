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
		{Image: "reg/app:1", Layer: "sha256:a", State: nodestatus.Streamed},
		{Image: "reg/app@sha256:d", Layer: "sha256:b", State: nodestatus.Downloaded, Reason: ReasonUnauthorized},
		{Image: "reg/other:1", Layer: "sha256:c", State: nodestatus.Streamed},
	} {
		if err := l.Record(o); err != nil {
			t.Fatal(err)
		}
	}
	info := ImageStreamingInfo(path)
	got := info(&runtimeapi.Image{RepoTags: []string{"reg/app:1"}, RepoDigests: []string{"reg/app@sha256:d"}})
	var v imageStreaming
	if err := json.Unmarshal([]byte(got[StreamingInfoKey]), &v); err != nil {
		t.Fatalf("%q: %v", got, err)
	}
	if v.Streamed != 1 || v.Downloaded != 1 || len(v.Layers) != 2 || v.Layers[1].Reason != ReasonUnauthorized {
		t.Errorf("info of reg/app: %+v", v)
	}
	if got := info(&runtimeapi.Image{RepoTags: []string{"reg/unknown:1"}}); got != nil {
		t.Errorf("an image never pulled through the snapshotter got %v", got)
	}
	if got := ImageStreamingInfo(filepath.Join(t.TempDir(), "none.json"))(&runtimeapi.Image{RepoTags: []string{"reg/app:1"}}); got != nil {
		t.Errorf("without a status file: %v", got)
	}
}
