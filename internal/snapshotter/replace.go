package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	s.log.Error("a streamed layer is bad; downloading the original layer in its place", "image", ref.ImageRef, "layer", ref.SourceDigest, "streamed", ref.Digest, "cause", cause)
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
		if err := s.download(ctx, ref, tmp); err != nil {
			_ = os.RemoveAll(tmp)
			return fmt.Errorf("download layer %s in place of its bad streamed twin: %w", ref.SourceDigest, err)
		}
		if err := atomicfile.WriteFile(done, []byte(ref.SourceDigest.String()+"\n"), 0o600); err != nil {
			_ = os.RemoveAll(tmp)
			return fmt.Errorf("mark the downloaded layer %s: %w", ref.SourceDigest, err)
		}
	}
	// The FUSE mount goes (detached, if containers still hold it), and
	// the unpacked layer takes its place under the snapshot's name. A
	// failure here keeps the checked download for the next attempt.
	mp := s.fsPath(id)
	if err := s.layers.Unmount(ctx, mp); err != nil {
		return fmt.Errorf("unmount the bad streamed layer at %s: %w", mp, err)
	}
	if _, err := os.Lstat(tmp); err == nil {
		if err := os.Remove(mp); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("clear %s: %w", mp, err)
		}
		if err := os.Rename(tmp, mp); err != nil {
			return fmt.Errorf("put the downloaded layer at %s: %w", mp, err)
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
		info.Labels[LabelDownloaded] = cause.Error()
		_, err = storage.UpdateInfo(ctx, snapshots.Info{Name: key, Labels: info.Labels},
			"labels."+LabelLayer, "labels."+LabelRemote, "labels."+LabelDownloaded)
		return err
	})
	if err != nil {
		return fmt.Errorf("record the downloaded layer of snapshot %s: %w", key, err)
	}
	// The labels say it now; a marker left by a crash here is removed
	// with the snapshot's directory.
	_ = os.Remove(done)
	s.metrics.replaced.Inc()
	s.log.Warn("bad streamed layer replaced by the downloaded original", "image", ref.ImageRef, "layer", ref.SourceDigest, "duration", time.Since(start))
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
	diffID := digest.Canonical.Digester()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := archive.Apply(ctx, dir, io.TeeReader(tarStream, diffID.Hash()), archive.WithConvertWhiteout(archive.OverlayConvertWhiteout)); err != nil {
		return err
	}
	// Apply stops at the tar's end; what follows still counts, and the
	// blob is read to its end, where its digest is checked.
	if _, err := io.Copy(diffID.Hash(), tarStream); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, blob); err != nil {
		return err
	}
	if ref.DiffID != "" && diffID.Digest() != ref.DiffID {
		return fmt.Errorf("the layer uncompresses to %s, but the image config says %s", diffID.Digest(), ref.DiffID)
	}
	return nil
}
