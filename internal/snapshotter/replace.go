package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/atomicfile"
	"github.com/sluicehq/sluice/internal/fusemanager"
)

// LabelDownloaded marks a snapshot that was streamed, found bad, and
// replaced by the downloaded original layer; its value says why.
const LabelDownloaded = "containerd.io/snapshot/sluice.downloaded"

// replaceBad puts the original layer, downloaded and unpacked, in place of
// a streamed layer the FUSE manager found bad: containers already using
// the streamed layer keep failing their reads of it, and the next
// container of the image runs on the bytes the image names. The download
// is checked against the layer's digest and the image config's DiffID.
func (s *Snapshotter) replaceBad(ctx context.Context, key, id string, ref fusemanager.LayerRef, cause error) error {
	return s.replaceStreamed(ctx, key, id, ref, replacement{
		fill: func(ctx context.Context, dir string) error {
			s.log.Error("a streamed layer is bad; downloading the original layer in its place", "image", ref.ImageRef, "layer", ref.SourceDigest, "streamed", ref.Digest, "cause", cause)
			if err := s.download(ctx, ref, dir); err != nil {
				return fmt.Errorf("download the original layer: %w", err)
			}
			return nil
		},
		label: LabelDownloaded, value: cause.Error(),
		done: func(d time.Duration) {
			s.metrics.replaced.Inc()
			s.log.Warn("bad streamed layer replaced by the downloaded original", "image", ref.ImageRef, "layer", ref.SourceDigest, "duration", d)
		},
	})
}

// replacement is what takes a streamed layer's place: fill unpacks it into
// a directory, checked; unmount frees the mountpoint; label and value
// mark the snapshot once it is in place, and done reports it.
type replacement struct {
	fill func(ctx context.Context, dir string) error
	// unmount takes the FUSE mount off its mountpoint (the layers'
	// Unmount when nil).
	unmount      func(ctx context.Context, mountpoint string) error
	label, value string
	done         func(time.Duration)
}

// replaceStreamed puts a local copy of a streamed layer under the
// snapshot's name, in place of its FUSE mount, and labels the snapshot a
// local one. Containers that hold the FUSE mount keep it until they end.
func (s *Snapshotter) replaceStreamed(ctx context.Context, key, id string, ref fusemanager.LayerRef, r replacement) error {
	unlock := s.replacing.Lock(id)
	defer unlock()
	// Another container's start may have replaced it meanwhile.
	var labels map[string]string
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, info, _, err := storage.GetInfo(ctx, key)
		labels = info.Labels
		return err
	})
	if err != nil {
		return err
	}
	if _, streamed := labels[LabelLayer]; !streamed {
		return nil
	}
	start := time.Now()
	// The layer is downloaded beside the mountpoint, then renamed onto it,
	// then the labels say so. A replacement cut short between the rename
	// and the labels (a failed transaction, a crash) leaves the labels
	// saying "streamed" and the mountpoint holding the whole layer, which
	// cannot be removed as an empty mountpoint: the marker, written beside
	// once the download is checked and before the rename, lets the next
	// attempt see that and go on from where it stopped. It is not in the
	// layer's directory, where every container of the image would see it.
	tmp := filepath.Join(s.root, "snapshots", id, "download")
	done := s.downloadedPath(id)
	if _, err := os.Stat(done); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		_ = os.RemoveAll(tmp)
		if err := r.fill(ctx, tmp); err != nil {
			_ = os.RemoveAll(tmp)
			return fmt.Errorf("layer %s: %w", ref.SourceDigest, err)
		}
		if err := atomicfile.WriteFile(done, []byte(ref.SourceDigest.String()+"\n"), 0o600); err != nil {
			_ = os.RemoveAll(tmp)
			return fmt.Errorf("mark the local copy of layer %s as complete: %w", ref.SourceDigest, err)
		}
	}
	// The FUSE mount goes (detached, if containers still hold it), and
	// the unpacked layer takes its place under the snapshot's name. A
	// failure here keeps the checked download for the next attempt.
	mp := s.fsPath(id)
	unmount := r.unmount
	if unmount == nil {
		unmount = s.layers.Unmount
	}
	if err := unmount(ctx, mp); err != nil {
		return fmt.Errorf("unmount the streamed layer at %s: %w", mp, err)
	}
	if _, err := os.Lstat(tmp); err == nil {
		// rename(2) replaces the empty mountpoint at once: no moment
		// without a directory there for a container's overlay. (os.Rename
		// refuses a directory as the target.)
		if err := syscall.Rename(tmp, mp); err != nil {
			return fmt.Errorf("put the local copy of the layer at %s: %w", mp, &os.LinkError{Op: "rename", Old: tmp, New: mp, Err: err})
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// Otherwise the download was put at mp by an attempt that stopped
	// before recording it.
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, info, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		delete(info.Labels, LabelLayer)
		delete(info.Labels, LabelRemote)
		info.Labels[r.label] = r.value
		_, err = storage.UpdateInfo(ctx, snapshots.Info{Name: key, Labels: info.Labels},
			"labels."+LabelLayer, "labels."+LabelRemote, "labels."+r.label)
		return err
	})
	if err != nil {
		return fmt.Errorf("record the local copy of snapshot %s: %w", key, err)
	}
	// The labels say it now; a marker left by a crash here is removed
	// with the snapshot's directory.
	_ = os.Remove(done)
	r.done(time.Since(start))
	return nil
}

// downloadedPath marks a snapshot whose original layer was downloaded and
// checked, and is at its download directory or already at its mountpoint.
func (s *Snapshotter) downloadedPath(id string) string {
	return filepath.Join(s.root, "snapshots", id, "downloaded")
}

// download fetches the original layer, checks its digest, and unpacks it
// into dir as overlayfs expects a lower directory (whiteouts as character
// devices, opaque directories marked), checking its DiffID.
func (s *Snapshotter) download(ctx context.Context, ref fusemanager.LayerRef, dir string) error {
	blob, err := s.resolver.OpenOriginal(ctx, ref)
	if err != nil {
		return err
	}
	defer blob.Close()
	tarStream, err := compression.DecompressStream(blob)
	if err != nil {
		return err
	}
	defer tarStream.Close()
	if err := applyLayer(ctx, dir, tarStream, ref.DiffID); err != nil {
		return err
	}
	// The blob is read to its end, where its digest is checked.
	_, err = io.Copy(io.Discard, blob)
	return err
}

// applyLayer unpacks a layer's tar into dir as overlayfs expects a lower
// directory (whiteouts as character devices, opaque directories marked),
// with containerd's own unpack, and checks the tar's DiffID against want
// (unless empty).
func applyLayer(ctx context.Context, dir string, tarStream io.Reader, want digest.Digest) error {
	diffID := digest.Canonical.Digester()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := archive.Apply(ctx, dir, io.TeeReader(tarStream, diffID.Hash()), archive.WithConvertWhiteout(archive.OverlayConvertWhiteout)); err != nil {
		return err
	}
	// Apply stops at the tar's end; what follows still counts.
	if _, err := io.Copy(diffID.Hash(), tarStream); err != nil {
		return err
	}
	if want != "" && diffID.Digest() != want {
		return fmt.Errorf("the layer uncompresses to %s, but the image config says %s", diffID.Digest(), want)
	}
	return nil
}
