package cli

import (
	"fmt"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/nodestatus"
)

// nodeImageStatus is one image of `sluice node status`.
type nodeImageStatus struct {
	Image      string `json:"image"`
	Streamed   int    `json:"streamed"`
	Downloaded int    `json:"downloaded"`
	// FetchedBeforeStart sums its layers' own, once a container started.
	FetchedBeforeStart *int64            `json:"fetchedBeforeStartBytes,omitempty"`
	Layers             []nodeLayerStatus `json:"layers"`
}

type nodeLayerStatus struct {
	Digest string `json:"digest"`
	Served string `json:"served"`
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
	// MountSeconds is a streamed layer's time to mount; FetchedBeforeStart
	// the bytes of it fetched from the registry when the first container
	// on it after the pull was prepared.
	MountSeconds       float64 `json:"mountSeconds,omitempty"`
	FetchedBeforeStart *int64  `json:"fetchedBeforeStartBytes,omitempty"`
	At                 string  `json:"at"`
}

// NewNodeCommand is `sluice node status`: how the layers of the images
// pulled on this node are served, as sluice-snapshotter recorded it.
func NewNodeCommand(a *App) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "What sluice-snapshotter did on this node"}
	var root string
	status := &cobra.Command{
		Use:   "status",
		Short: "Show how the layers of the images pulled on this node are served",
		Long: `Status lists the images pulled on this node through sluice-snapshotter and,
for each layer the pull prepared, whether it is streamed (mounted lazily) or
was downloaded by containerd, and why: the same reasons as the metric
sluice_snapshotter_fallbacks_total{reason} (no_artifact, unauthorized,
registry, bad_artifact, over_limit, untrusted, no_labels, bad_reference,
mount, bad_layer, error). For a streamed layer it shows its time to mount
(mountSeconds: from the snapshotter's request to the FUSE manager to the
mount being ready) and, once a container was created on it, the bytes
fetched from the registry before that first container started
(fetchedBeforeStartBytes; summed per image). Layers already on the node
when an image was pulled are not prepared again, so they appear under the
image that brought them. It reads the snapshotter's state directory: run
it as root on the node.`,
		Example: `  sluice node status -o table
  sluice node status --query "[?downloaded > \` + "`0`" + `].image" -o tsv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			outcomes, err := nodestatus.Read(nodestatus.Path(root))
			if err != nil {
				return err
			}
			return a.print(nodeStatus(outcomes), nodeStatusTable)
		},
	}
	status.Flags().StringVar(&root, "root", "/var/lib/sluice-snapshotter", "the snapshotter's state directory (its --root)")
	cmd.AddCommand(status)
	return cmd
}

// nodeStatus groups outcomes by image, images in name order, layers in
// the order they were prepared.
func nodeStatus(outcomes []nodestatus.Outcome) []nodeImageStatus {
	byImage := map[string]*nodeImageStatus{}
	for _, o := range outcomes {
		img := byImage[o.Image]
		if img == nil {
			img = &nodeImageStatus{Image: o.Image, Layers: []nodeLayerStatus{}}
			byImage[o.Image] = img
		}
		if o.State == nodestatus.Streamed {
			img.Streamed++
		} else {
			img.Downloaded++
		}
		img.Layers = append(img.Layers, nodeLayerStatus{Digest: o.Layer, Served: o.State, Reason: o.Reason, Detail: o.Detail,
			MountSeconds: o.MountSeconds, FetchedBeforeStart: o.FetchedBeforeStart, At: o.At.UTC().Format(time.RFC3339)})
		if o.FetchedBeforeStart != nil {
			sum := *o.FetchedBeforeStart
			if img.FetchedBeforeStart != nil {
				sum += *img.FetchedBeforeStart
			}
			img.FetchedBeforeStart = &sum
		}
	}
	out := make([]nodeImageStatus, 0, len(byImage))
	for _, img := range byImage {
		out = append(out, *img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Image < out[j].Image })
	return out
}

// nodeStatusTable is a row per image, then a row per layer.
func nodeStatusTable(v any) []tableRow {
	images, _ := v.([]any)
	var rows []tableRow
	for _, img := range images {
		rows = append(rows, tableRow{{Header: "Image", Value: field(img, "image")},
			{Header: "Served", Value: fmt.Sprintf("%v streamed, %v downloaded", field(img, "streamed"), field(img, "downloaded"))},
			{Header: "Reason", Value: ""}, {Header: "Mount", Value: ""},
			{Header: "Fetched before start", Value: bytesText(field(img, "fetchedBeforeStartBytes"))}, {Header: "At", Value: ""}})
		layers, _ := field(img, "layers").([]any)
		for _, l := range layers {
			rows = append(rows, tableRow{{Header: "Image", Value: fmt.Sprintf("  %v", field(l, "digest"))},
				{Header: "Served", Value: field(l, "served")}, {Header: "Reason", Value: field(l, "reason")},
				{Header: "Mount", Value: secondsText(field(l, "mountSeconds"))},
				{Header: "Fetched before start", Value: bytesText(field(l, "fetchedBeforeStartBytes"))}, {Header: "At", Value: field(l, "at")}})
		}
	}
	return rows
}

// secondsText is a number of seconds as a duration ("412ms"); empty when
// there is none.
func secondsText(v any) string {
	f, ok := v.(float64)
	if !ok || f <= 0 {
		return ""
	}
	d := time.Duration(f * float64(time.Second))
	if d < time.Millisecond {
		return d.Round(time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// bytesText is a number of bytes in units; empty when there is none.
func bytesText(v any) string {
	f, ok := v.(float64)
	if !ok {
		return ""
	}
	return humanBytes(int64(f))
}
