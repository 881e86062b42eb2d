package snapshotter

import (
	"encoding/json"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/sluicehq/sluice/internal/nodestatus"
)

// StreamingInfoKey is the entry the CRI proxy adds to an image's verbose
// ImageStatus (crictl inspecti): how its layers are served.
const StreamingInfoKey = "sluice.streaming"

// imageStreaming is the value of StreamingInfoKey.
type imageStreaming struct {
	Streamed   int `json:"streamed"`
	Downloaded int `json:"downloaded"`
	// FetchedBeforeStart sums the layers' own, once a container started.
	FetchedBeforeStart *int64                `json:"fetchedBeforeStartBytes,omitempty"`
	Layers             []imageStreamingLayer `json:"layers"`
}

type imageStreamingLayer struct {
	Digest string `json:"digest"`
	Served string `json:"served"`
	Reason string `json:"reason,omitempty"`
	// MountSeconds and FetchedBeforeStart are a streamed layer's time to
	// mount and the bytes it had fetched when its first container started.
	MountSeconds       float64 `json:"mountSeconds,omitempty"`
	FetchedBeforeStart *int64  `json:"fetchedBeforeStartBytes,omitempty"`
}

func (i *imageStreaming) fetchedBeforeStart() int64 {
	if i.FetchedBeforeStart == nil {
		return 0
	}
	return *i.FetchedBeforeStart
}

// ImageStreamingInfo returns the CRI proxy's ImageInfo: for an image the
// node's status record (at statusPath) knows by one of its names, how its
// layers are served, as JSON under StreamingInfoKey.
func ImageStreamingInfo(statusPath string) func(*runtimeapi.Image) map[string]string {
	return func(img *runtimeapi.Image) map[string]string {
		outcomes, err := nodestatus.Read(statusPath)
		if err != nil {
			return nil
		}
		names := map[string]bool{}
		for _, n := range append(append([]string{}, img.GetRepoTags()...), img.GetRepoDigests()...) {
			names[n] = true
		}
		var info imageStreaming
		for _, o := range outcomes {
			if !names[o.Image] {
				continue
			}
			if o.State == nodestatus.Streamed {
				info.Streamed++
			} else {
				info.Downloaded++
			}
			info.Layers = append(info.Layers, imageStreamingLayer{Digest: o.Layer, Served: o.State, Reason: o.Reason,
				MountSeconds: o.MountSeconds, FetchedBeforeStart: o.FetchedBeforeStart})
			if o.FetchedBeforeStart != nil {
				info.FetchedBeforeStart = new(*o.FetchedBeforeStart + info.fetchedBeforeStart())
			}
		}
		if len(info.Layers) == 0 {
			return nil
		}
		b, err := json.Marshal(info)
		if err != nil {
			return nil
		}
		return map[string]string{StreamingInfoKey: string(b)}
	}
}
