package snapshotter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/fusemanager"
	"github.com/sluicehq/sluice/internal/nodestatus"
)

// countingLayers stands in for the FUSE manager: a mount takes
// mountDelay, and each mounted layer has fetched what fetched says.
type countingLayers struct {
	fakeLayers
	mountDelay time.Duration
	mu         sync.Mutex
	mounted    []string
	fetched    map[string]int64
}

func (c *countingLayers) Mount(ctx context.Context, mountpoint string, ref fusemanager.LayerRef) error {
	time.Sleep(c.mountDelay)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mounted = append(c.mounted, mountpoint)
	return nil
}

func (c *countingLayers) Fetched(ctx context.Context, mountpoint string) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.fetched[mountpoint]
	if !ok {
		return 0, fmt.Errorf("%s: %w", mountpoint, fusemanager.ErrNotMounted)
	}
	return n, nil
}

// pullStreamed prepares the layers of r.example/app:1 as a pull does, each
// streamed, layer-i on layer-(i-1).
func pullStreamed(t *testing.T, s *Snapshotter, layers int) {
	t.Helper()
	parent := ""
	for i := 1; i <= layers; i++ {
		target := fmt.Sprintf("layer-%d", i)
		labels := map[string]string{LabelTarget: target, labelImageRef: "r.example/app:1", labelManifestDigest: digest.FromString("m").String(),
			labelLayerDigest: digest.FromString(target).String()}
		if _, err := s.Prepare(context.Background(), "extract-"+target, parent, snapshots.WithLabels(labels)); !errdefs.IsAlreadyExists(err) {
			t.Fatalf("prepare of streamed %s: %v, want ErrAlreadyExists", target, err)
		}
		parent = target
	}
}

// A pull records each streamed layer's time to mount; the first container
// prepared on the layers records what each had fetched then, and later
// containers change nothing.
func TestMountTimeAndFetchedBeforeStart(t *testing.T) {
	layers := &countingLayers{mountDelay: 20 * time.Millisecond, fetched: map[string]int64{}}
	resolver := &fakeResolver{ref: fusemanager.LayerRef{Registry: "r.example", Repository: "app", ImageRef: "r.example/app:1"}}
	s, err := New(t.TempDir(), layers, resolver, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	statusPath := nodestatus.Path(t.TempDir())
	s.RecordStatus(nodestatus.Open(statusPath))
	ctx := context.Background()

	pullStreamed(t, s, 2)
	if h := histogramCount(t, s, "sluice_snapshotter_mount_seconds"); h != 2 {
		t.Errorf("mount_seconds counted %d mounts, want 2", h)
	}
	// The first container: layer-1 (mounted first) fetched 1000 bytes,
	// layer-2 2000.
	for i, mp := range layers.mounted {
		layers.fetched[mp] = int64(1000 * (i + 1))
	}
	if _, err := s.Prepare(ctx, "container-1", "layer-2"); err != nil {
		t.Fatal(err)
	}
	// A second container, after more was fetched, is not the start.
	for mp := range layers.fetched {
		layers.fetched[mp] += 1 << 20
	}
	if _, err := s.Prepare(ctx, "container-2", "layer-2"); err != nil {
		t.Fatal(err)
	}
	out, err := nodestatus.Read(statusPath)
	if err != nil || len(out) != 2 {
		t.Fatalf("status record: %+v, %v", out, err)
	}
	for i, o := range out {
		if o.State != nodestatus.Streamed || o.MountSeconds < layers.mountDelay.Seconds() || o.MountSeconds > 10 {
			t.Errorf("layer %d: %s, mounted in %vs; want streamed, mounted in at least %v", i+1, o.State, o.MountSeconds, layers.mountDelay)
		}
		if want := int64(1000 * (i + 1)); o.FetchedBeforeStart == nil || *o.FetchedBeforeStart != want {
			t.Errorf("layer %d: fetched before start %v, want %d", i+1, o.FetchedBeforeStart, want)
		}
	}
	if h := histogramCount(t, s, "sluice_snapshotter_fetched_before_start_bytes"); h != 2 {
		t.Errorf("fetched_before_start_bytes counted %d layers, want 2 (once each)", h)
	}
}

// A mounter that cannot say what a layer fetched, or a mount it does not
// know, leaves the record without the start, and the container is made.
func TestFetchedBeforeStartUnknown(t *testing.T) {
	for _, tc := range []struct {
		name   string
		layers LayerMounter
	}{
		{name: "mounter without a fetch count", layers: &fakeLayers{}},
		{name: "mount unknown to the manager", layers: &countingLayers{fetched: map[string]int64{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(t.TempDir(), tc.layers, &fakeResolver{ref: fusemanager.LayerRef{Registry: "r.example", Repository: "app"}}, nil,
				slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			statusPath := nodestatus.Path(t.TempDir())
			s.RecordStatus(nodestatus.Open(statusPath))
			pullStreamed(t, s, 1)
			if _, err := s.Prepare(context.Background(), "container-1", "layer-1"); err != nil {
				t.Fatal(err)
			}
			out, err := nodestatus.Read(statusPath)
			if err != nil || len(out) != 1 || out[0].FetchedBeforeStart != nil {
				t.Errorf("status record: %+v, %v; want the layer without bytes fetched before start", out, err)
			}
		})
	}
}

// histogramCount returns how many observations a histogram of the
// snapshotter's metrics holds.
func histogramCount(t *testing.T, s *Snapshotter, name string) uint64 {
	t.Helper()
	families, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
