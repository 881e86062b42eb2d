package snapshotter

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/internal/fusemanager"
)

// fakeLayers stands in for the FUSE manager: it "mounts" nothing, and says
// a layer is bad when told to.
type fakeLayers struct {
	mu        sync.Mutex
	bad       bool
	mounted   []string
	unmounted []string
}

func (f *fakeLayers) Mount(ctx context.Context, mountpoint string, ref fusemanager.LayerRef) error {
	f.mu.Lock()
	f.mounted = append(f.mounted, mountpoint)
	f.mu.Unlock()
	return f.Check(ctx, mountpoint)
}

func (f *fakeLayers) Unmount(ctx context.Context, mountpoint string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unmounted = append(f.unmounted, mountpoint)
	return nil
}

func (f *fakeLayers) Check(ctx context.Context, mountpoint string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bad {
		return fmt.Errorf("%w: chunk 3 failed verification", fusemanager.ErrLayerBad)
	}
	return nil
}

// fakeResolver streams every labelled layer, and serves its original.
type fakeResolver struct {
	ref      fusemanager.LayerRef
	original []byte
}

func (f *fakeResolver) Resolve(ctx context.Context, labels map[string]string) (*fusemanager.LayerRef, error) {
	ref := f.ref
	return &ref, nil
}

func (f *fakeResolver) OpenOriginal(ctx context.Context, ref fusemanager.LayerRef) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(f.original)), nil
}

func gzipTar(t *testing.T, entries map[string]string) ([]byte, digest.Digest) {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for name, body := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(body))
	}
	_ = tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(tarBuf.Bytes())
	_ = zw.Close()
	return gz.Bytes(), digest.FromBytes(tarBuf.Bytes())
}

// A streamed layer the FUSE manager found bad is replaced, when the next
// container is made, by the original layer, downloaded and checked: the
// container's overlay reads real files from then on.
func TestBadLayerIsReplacedByTheOriginal(t *testing.T) {
	testenv.Root(t, "unpacking a layer with its owners")
	blob, diffID := gzipTar(t, map[string]string{"app/run.sh": "echo the real bytes", "app/.wh.gone": ""})
	layers := &fakeLayers{}
	resolver := &fakeResolver{original: blob, ref: fusemanager.LayerRef{Registry: "r.example", Repository: "app", SourceDigest: digest.FromBytes(blob), DiffID: diffID, ImageRef: "r.example/app:1"}}
	for _, tc := range []struct {
		name      string
		diffID    digest.Digest
		wantError bool
	}{
		{name: "original matches", diffID: diffID},
		{name: "original does not match the config", diffID: digest.FromString("another layer"), wantError: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layers.bad = false
			resolver.ref.DiffID = tc.diffID
			s := streamedSnapshotter(t, layers, resolver)
			ctx := context.Background()
			if _, err := s.Prepare(ctx, "container-1", "layer-1"); err != nil {
				t.Fatalf("a container on the healthy streamed layer: %v", err)
			}

			layers.bad = true
			mounts, err := s.Prepare(ctx, "container-2", "layer-1")
			if tc.wantError {
				if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "image config says") {
					t.Fatalf("a container when the original does not match: %v, want unavailable naming the DiffID", err)
				}
				if info, _ := s.Stat(ctx, "layer-1"); info.Labels[LabelLayer] == "" {
					t.Fatal("the streamed layer's label went although nothing replaced it")
				}
				return
			}
			if err != nil {
				t.Fatalf("a container after the layer went bad: %v", err)
			}
			lower := strings.TrimPrefix(mounts[0].Options[len(mounts[0].Options)-1], "lowerdir=")
			got, err := os.ReadFile(filepath.Join(lower, "app", "run.sh"))
			if err != nil || string(got) != "echo the real bytes" {
				t.Fatalf("the replaced layer reads %q, %v", got, err)
			}
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(lower, "app", "gone"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
				t.Fatalf("whiteout not unpacked as overlayfs expects: %v mode %o", err, st.Mode)
			}
			info, err := s.Stat(ctx, "layer-1")
			if err != nil {
				t.Fatal(err)
			}
			if info.Labels[LabelLayer] != "" || info.Labels[LabelRemote] != "" || !strings.Contains(info.Labels[LabelDownloaded], "chunk 3") {
				t.Fatalf("labels after the replacement: %v", info.Labels)
			}
			if len(layers.unmounted) == 0 {
				t.Fatal("the bad FUSE mount was not unmounted")
			}
			// Asked again, nothing is downloaded twice.
			if _, err := s.Prepare(ctx, "container-3", "layer-1"); err != nil {
				t.Fatal(err)
			}
			if got := testutil.ToFloat64(s.metrics.replaced); got != 1 {
				t.Fatalf("bad layers replaced: %v, want 1", got)
			}
		})
	}
}

// A replacement cut short after its checked download was marked (a crash,
// a failed label transaction) goes on from there at the next container:
// the download is not made again, and a mountpoint already holding the
// layer is recorded as it is instead of being cleared.
func TestInterruptedReplacementRecovers(t *testing.T) {
	testenv.Root(t, "unpacking a layer with its owners")
	blob, diffID := gzipTar(t, map[string]string{"app/run.sh": "echo the real bytes"})
	for _, tc := range []struct {
		name string
		// renamed: the download had been put at the mountpoint.
		renamed bool
	}{
		{name: "stopped between the rename and the labels", renamed: true},
		{name: "stopped between the marker and the rename"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layers := &fakeLayers{}
			// The original served no longer matches the config, so a
			// second download would fail: the test passes only if the
			// marked one is used.
			resolver := &fakeResolver{original: blob, ref: fusemanager.LayerRef{Registry: "r.example", Repository: "app", SourceDigest: digest.FromBytes(blob), DiffID: digest.FromString("not this layer"), ImageRef: "r.example/app:1"}}
			s := streamedSnapshotter(t, layers, resolver)
			ctx := context.Background()
			id := snapshotID(t, s, "layer-1")

			// What the interrupted replacement left: the checked layer
			// (at the mountpoint, or still beside it), its marker, and
			// labels that still say the layer is streamed.
			unpacked := filepath.Join(s.root, "snapshots", id, "download")
			if tc.renamed {
				unpacked = s.fsPath(id)
			}
			if err := os.MkdirAll(filepath.Join(unpacked, "app"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(unpacked, "app", "run.sh"), []byte("echo the real bytes"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(s.downloadedPath(id), []byte(diffID.String()+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}

			layers.bad = true
			mounts, err := s.Prepare(ctx, "container-1", "layer-1")
			if err != nil {
				t.Fatalf("a container after an interrupted replacement: %v", err)
			}
			lower := strings.TrimPrefix(mounts[0].Options[len(mounts[0].Options)-1], "lowerdir=")
			if got, err := os.ReadFile(filepath.Join(lower, "app", "run.sh")); err != nil || string(got) != "echo the real bytes" {
				t.Fatalf("the replaced layer reads %q, %v", got, err)
			}
			info, err := s.Stat(ctx, "layer-1")
			if err != nil {
				t.Fatal(err)
			}
			if info.Labels[LabelLayer] != "" || info.Labels[LabelRemote] != "" || !strings.Contains(info.Labels[LabelDownloaded], "chunk 3") {
				t.Fatalf("labels after the replacement: %v", info.Labels)
			}
			if _, err := os.Stat(s.downloadedPath(id)); !os.IsNotExist(err) {
				t.Fatalf("the marker outlived the recorded replacement: %v", err)
			}
			if got := testutil.ToFloat64(s.metrics.replaced); got != 1 {
				t.Fatalf("bad layers replaced: %v, want 1", got)
			}
		})
	}
}

// streamedSnapshotter returns a snapshotter on layers and resolver that
// has prepared "layer-1", a streamed layer of resolver's image.
func streamedSnapshotter(t *testing.T, layers LayerMounter, resolver *fakeResolver) *Snapshotter {
	t.Helper()
	s, err := New(t.TempDir(), layers, resolver, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	labels := map[string]string{LabelTarget: "layer-1", labelImageRef: "r.example/app:1", labelManifestDigest: digest.FromString("m").String(), labelLayerDigest: resolver.ref.SourceDigest.String()}
	if _, err := s.Prepare(context.Background(), "extract-1", "", snapshots.WithLabels(labels)); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("prepare of a streamed layer: %v, want ErrAlreadyExists", err)
	}
	return s
}

// snapshotID is the directory number of a snapshot.
func snapshotID(t *testing.T, s *Snapshotter, key string) string {
	t.Helper()
	var id string
	if err := s.ms.WithTransaction(context.Background(), false, func(ctx context.Context) (err error) {
		id, _, _, err = storage.GetInfo(ctx, key)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return id
}
