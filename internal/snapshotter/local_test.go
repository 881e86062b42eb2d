package snapshotter

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicehq/sluice/internal/fusemanager"
	"github.com/sluicehq/sluice/internal/testenv"
)

// writingLayers is fakeLayers that also writes a layer's tar once told
// the layer is complete.
type writingLayers struct {
	fakeLayers
	complete   bool
	mountpoint string // the streamed layer's
	tar        []byte
	detached   []string
	asked      int // Layer calls
}

// Check says a detached mountpoint is no longer served.
func (w *writingLayers) Check(ctx context.Context, mountpoint string) error {
	w.mu.Lock()
	detached := slices.Contains(w.detached, mountpoint)
	w.mu.Unlock()
	if detached {
		return fusemanager.ErrNotMounted
	}
	return w.fakeLayers.Check(ctx, mountpoint)
}

func (w *writingLayers) Detach(ctx context.Context, mountpoint string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.detached = append(w.detached, mountpoint)
	return nil
}

// Statuses says every mountpoint it was asked to write is complete once
// told so; the snapshotter asks only for those.
func (w *writingLayers) Statuses(ctx context.Context) ([]fusemanager.Status, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return []fusemanager.Status{{Mountpoint: w.mountpoint, Complete: w.complete}}, nil
}

func (w *writingLayers) Layer(ctx context.Context, mountpoint string) (io.ReadCloser, error) {
	w.asked++
	if !w.complete {
		return nil, fusemanager.ErrNotComplete
	}
	return io.NopCloser(bytes.NewReader(w.tar)), nil
}

// A streamed layer the FUSE manager has completed is unpacked from it, its
// DiffID checked, in place of the FUSE mount: the containers created after
// read it from the local disk. A layer not complete, or whose tar does not
// match the image config, keeps its FUSE mount.
func TestCompleteLayerIsUnpacked(t *testing.T) {
	testenv.Root(t, "unpacking a layer with its owners")
	blob, diffID := gzipTar(t, map[string]string{"app/run.sh": "echo from the local disk", "app/.wh.gone": ""})
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	tarBytes, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := gzipTar(t, map[string]string{"app/run.sh": "another layer"})
	zr, _ = gzip.NewReader(bytes.NewReader(other))
	otherTar, _ := io.ReadAll(zr)

	layers := &writingLayers{}
	resolver := &fakeResolver{ref: fusemanager.LayerRef{Registry: "r.example", Repository: "app", SourceDigest: digest.FromBytes(blob), DiffID: diffID, ImageRef: "r.example/app:1"}}
	s := streamedSnapshotter(t, layers, resolver)
	ctx := context.Background()
	streamed := func(why string) {
		t.Helper()
		info, err := s.Stat(ctx, "layer-1")
		if err != nil {
			t.Fatal(err)
		}
		if info.Labels[LabelLayer] == "" || info.Labels[LabelLocal] != "" || len(layers.detached)+len(layers.unmounted) != 0 {
			t.Fatalf("%s: labels %v, detached %v; want the layer still streamed", why, info.Labels, layers.detached)
		}
	}

	layers.mountpoint = s.fsPath(snapshotID(t, s, "layer-1"))
	// A container's start on a layer whose mount serves does not wait for
	// a replacement under way (an unpack holds the lock for as long as it
	// reads the layer).
	unlock := s.replacing.Lock(snapshotID(t, s, "layer-1"))
	checked := make(chan error, 1)
	go func() { checked <- s.ensureMounted(ctx, "layer-1", snapshotID(t, s, "layer-1"), resolver.ref) }()
	select {
	case err := <-checked:
		if err != nil {
			t.Fatalf("checking a served layer: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("checking a served layer waited for the replacement lock")
	}
	unlock()
	s.unpackComplete(ctx, layers)
	streamed("not complete")
	if layers.asked != 0 {
		t.Fatalf("the layer's tar was asked for %d times before the FUSE manager said it was complete", layers.asked)
	}
	layers.complete, layers.tar = true, otherTar
	s.unpackComplete(ctx, layers)
	streamed("a tar that is not the layer's")
	// A failure waits before the layer is read again.
	s.unpackComplete(ctx, layers)
	if layers.asked != 1 {
		t.Fatalf("the layer was read %d times, want once: a failed unpacking is retried only after a wait", layers.asked)
	}
	if r := s.unpackRetries[snapshotID(t, s, "layer-1")]; r.wait != unpackRetryMin {
		t.Fatalf("retry %+v after one failure, want a wait of %v", r, unpackRetryMin)
	}
	s.unpackRetries = nil // the wait is over

	layers.tar = tarBytes
	s.unpackComplete(ctx, layers)
	info, err := s.Stat(ctx, "layer-1")
	if err != nil {
		t.Fatal(err)
	}
	if info.Labels[LabelLayer] != "" || info.Labels[LabelRemote] != "" || info.Labels[LabelLocal] != "complete" {
		t.Fatalf("labels after unpacking: %v", info.Labels)
	}
	if len(layers.detached) != 1 || len(layers.unmounted) != 0 {
		t.Fatalf("FUSE mounts detached %v, unmounted %v; want the layer's one detached, for the containers on it", layers.detached, layers.unmounted)
	}
	mounts, err := s.Prepare(ctx, "container-1", "layer-1")
	if err != nil {
		t.Fatal(err)
	}
	lower := strings.TrimPrefix(mounts[0].Options[len(mounts[0].Options)-1], "lowerdir=")
	if got, err := os.ReadFile(filepath.Join(lower, "app", "run.sh")); err != nil || string(got) != "echo from the local disk" {
		t.Fatalf("the unpacked layer reads %q, %v", got, err)
	}
	if _, err := os.Lstat(filepath.Join(lower, "app", ".wh.gone")); !os.IsNotExist(err) {
		t.Fatalf("a whiteout kept its tar name: %v", err)
	}
	// A container's check of its parents that read the labels before the
	// unpacking does not mount the layer again over its local copy.
	mountCalls := len(layers.mounted)
	if err := s.ensureMounted(ctx, "layer-1", snapshotID(t, s, "layer-1"), resolver.ref); err != nil || len(layers.mounted) != mountCalls {
		t.Fatalf("a late check of the unpacked layer: %v, mounts %v", err, layers.mounted)
	}
	// Nothing more to do.
	s.unpackComplete(ctx, layers)
	if got := testutil.ToFloat64(s.metrics.unpacked); got != 1 {
		t.Fatalf("layers unpacked: %v, want 1", got)
	}
}
