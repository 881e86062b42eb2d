// Package snapshotter is Sluice's containerd snapshotter: overlay snapshots
// for ordinary layers, and for layers of images that have a streaming
// artifact, remote snapshots mounted lazily by the FUSE manager, so that
// containerd skips their download.
//
// When a Prepare carries the labels a streaming-aware pull sets
// (containerd.io/snapshot.ref and the cri.* image labels), the snapshotter
// looks for the image's streaming referrer, maps the layer to its converted
// twin, has the FUSE manager mount it, commits the snapshot as remote and
// answers ErrAlreadyExists. Anything missing or wrong is logged in one line
// and the layer falls back to an ordinary snapshot that containerd fills.
package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"

	"github.com/sluicehq/sluice/internal/fusemanager"
	"github.com/sluicehq/sluice/internal/keyedmutex"
	"github.com/sluicehq/sluice/internal/nodestatus"
)

// Snapshot labels.
const (
	// LabelTarget names the snapshot a remote Prepare should produce.
	LabelTarget = "containerd.io/snapshot.ref"
	// LabelRemote marks a remote snapshot (containerd's convention).
	LabelRemote = "containerd.io/snapshot/remote"
	// LabelLayer keeps the streamed layer's location, to mount it again
	// without the registry.
	LabelLayer = "containerd.io/snapshot/sluice.layer"
)

// LayerMounter mounts streamed layers: the FUSE manager's client.
type LayerMounter interface {
	Mount(ctx context.Context, mountpoint string, ref fusemanager.LayerRef) error
	Unmount(ctx context.Context, mountpoint string) error
	Check(ctx context.Context, mountpoint string) error
}

// LayerResolver finds the streamed twin of the layer a Prepare's labels
// name (an error says why there is none), and opens the original layer of
// a streamed one, to download it in place of a streamed layer found bad.
type LayerResolver interface {
	Resolve(ctx context.Context, labels map[string]string) (*fusemanager.LayerRef, error)
	OpenOriginal(ctx context.Context, ref fusemanager.LayerRef) (io.ReadCloser, error)
}

// Snapshotter implements snapshots.Snapshotter.
type Snapshotter struct {
	root     string
	ms       *storage.MetaStore
	layers   LayerMounter
	resolver LayerResolver
	log      *slog.Logger
	metrics  *Metrics
	// status, when set, remembers how each pulled layer is served.
	status *nodestatus.Log
	// replacing serialises the replacement of a bad layer per snapshot.
	replacing keyedmutex.Mutex
	// unpackRetries holds, by snapshot ID, when a complete layer whose
	// unpacking failed is tried again (UnpackComplete's goroutine only).
	unpackRetries map[string]unpackRetry
}

var _ snapshots.Snapshotter = (*Snapshotter)(nil)

// New opens (creating) a snapshotter in root.
func New(root string, layers LayerMounter, resolver LayerResolver, metrics *Metrics, log *slog.Logger) (*Snapshotter, error) {
	if err := os.MkdirAll(filepath.Join(root, "snapshots"), 0o700); err != nil {
		return nil, err
	}
	ms, err := storage.NewMetaStore(filepath.Join(root, "metadata.db"))
	if err != nil {
		return nil, fmt.Errorf("open snapshot metadata: %w", err)
	}
	if metrics == nil {
		metrics = NewMetrics()
	}
	return &Snapshotter{root: root, ms: ms, layers: layers, resolver: resolver, log: log, metrics: metrics}, nil
}

func (s *Snapshotter) fsPath(id string) string { return filepath.Join(s.root, "snapshots", id, "fs") }
func (s *Snapshotter) workPath(id string) string {
	return filepath.Join(s.root, "snapshots", id, "work")
}

// Stat returns a snapshot's info.
func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	return info, err
}

// Update changes a snapshot's labels.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (out snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		out, err = storage.UpdateInfo(ctx, info, fieldpaths...)
		return err
	})
	return out, err
}

// Usage returns the disk usage of a snapshot: as committed, or measured
// now for an active one. A streamed layer uses no snapshot disk (its chunks
// live in the shared cache).
func (s *Snapshotter) Usage(ctx context.Context, key string) (usage snapshots.Usage, err error) {
	var id string
	var info snapshots.Info
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		id, info, usage, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil || info.Kind != snapshots.KindActive {
		return usage, err
	}
	du, err := fs.DiskUsage(ctx, s.fsPath(id))
	return snapshots.Usage(du), err
}

// Prepare creates an active snapshot, or for a streamable layer, the
// remote snapshot its labels target (answering ErrAlreadyExists).
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	snap, info, err := s.createSnapshot(ctx, snapshots.KindActive, key, parent, opts)
	if err != nil {
		return nil, err
	}
	target := info.Labels[LabelTarget]
	if target != "" {
		lowers := make([]string, len(snap.ParentIDs))
		for i, id := range snap.ParentIDs {
			lowers[i] = s.fsPath(id)
		}
		if err := s.prepareRemote(ctx, key, target, snap.ID, lowers, info.Labels, opts); err == nil || !errors.Is(err, errFallBack) {
			return nil, err
		}
	}
	mounts, err := s.mounts(ctx, snap, key)
	if err == nil && target == "" {
		// Not a layer of a pull: a container's root file system.
		s.noteStart(ctx, key)
	}
	return mounts, err
}

// errFallBack means the layer is not streamed: containerd fills the
// snapshot the ordinary way.
var errFallBack = errors.New("fall back to an ordinary snapshot")

// prepareRemote mounts a streamed layer and commits the target snapshot.
// It returns an ErrAlreadyExists-wrapped error on success, errFallBack when
// the layer cannot be streamed.
func (s *Snapshotter) prepareRemote(ctx context.Context, key, target, id string, lowers []string, labels map[string]string, opts []snapshots.Opt) error {
	image, layer := labels[labelImageRef], labels[labelLayerDigest]
	ref, err := s.resolver.Resolve(ctx, labels)
	if err != nil {
		s.fallBack(image, layer, err)
		return errFallBack
	}
	// The layers below, top first: a directory the layer implies without
	// listing it takes its attributes from theirs, as in containerd's
	// unpack.
	ref.Lowers = lowers
	mountStart := time.Now()
	if err := s.layers.Mount(ctx, s.fsPath(id), *ref); err != nil {
		reason := ReasonMount
		switch {
		case errors.Is(err, fusemanager.ErrLayerBad):
			reason = ReasonBadLayer
		case errors.Is(err, fusemanager.ErrOverLimit):
			reason = ReasonOverLimit
		case errors.Is(err, fusemanager.ErrBadArtifact):
			reason = ReasonBadArtifact
		}
		s.fallBack(image, layer, notStreamed(reason, "mounting the streamed layer: %v", err))
		return errFallBack
	}
	mountTime := time.Since(mountStart)
	b, _ := json.Marshal(ref)
	labels[LabelRemote] = "remote snapshot"
	labels[LabelLayer] = string(b)
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, err := storage.CommitActive(ctx, key, target, snapshots.Usage{}, append(opts, snapshots.WithLabels(labels))...)
		return err
	})
	if err != nil && !errdefs.IsAlreadyExists(err) {
		_ = s.layers.Unmount(ctx, s.fsPath(id))
		s.fallBack(image, layer, fmt.Errorf("committing the remote snapshot: %w", err))
		return errFallBack
	}
	s.metrics.streamed.Inc()
	s.metrics.mountSeconds.Observe(mountTime.Seconds())
	s.log.Info("layer streamed", "image", image, "layer", layer, "streamed", ref.Digest, "mountTime", mountTime.Round(time.Millisecond))
	s.recordOutcome(nodestatus.Outcome{Image: image, Layer: layer, State: nodestatus.Streamed, MountSeconds: mountTime.Seconds()})
	return fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
}

// fallBack logs, in one line, why a layer is downloaded instead of
// streamed, and counts it.
func (s *Snapshotter) fallBack(image, layer string, err error) {
	reason := ReasonError
	var nr *notStreamable
	if errors.As(err, &nr) {
		reason = nr.reason
	}
	s.metrics.fallbacks.WithLabelValues(reason).Inc()
	s.log.Warn("layer not streamed; containerd downloads it", "image", image, "layer", layer, "reason", err.Error())
	if image != "" && layer != "" {
		s.recordOutcome(nodestatus.Outcome{Image: image, Layer: layer, State: nodestatus.Downloaded, Reason: reason, Detail: err.Error()})
	}
}

// RecordStatus has the snapshotter note in l how each layer a pull
// prepares is served, for `sluice node status`.
func (s *Snapshotter) RecordStatus(l *nodestatus.Log) { s.status = l }

func (s *Snapshotter) recordOutcome(o nodestatus.Outcome) {
	if s.status == nil {
		return
	}
	if err := s.status.Record(o); err != nil {
		s.log.Warn("could not write the status file", "err", err)
	}
}

// View creates a read-only snapshot.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	snap, _, err := s.createSnapshot(ctx, snapshots.KindView, key, parent, opts)
	if err != nil {
		return nil, err
	}
	return s.mounts(ctx, snap, key)
}

// Mounts returns the mounts of an active or view snapshot.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var snap storage.Snapshot
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		snap, err = storage.GetSnapshot(ctx, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", key, err)
	}
	return s.mounts(ctx, snap, key)
}

// Commit commits an active snapshot.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		id, _, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		usage, err := fs.DiskUsage(ctx, s.fsPath(id))
		if err != nil {
			return err
		}
		if _, err := storage.CommitActive(ctx, key, name, snapshots.Usage(usage), opts...); err != nil {
			return fmt.Errorf("commit snapshot %s: %w", key, err)
		}
		return nil
	})
}

// Remove removes a snapshot; a streamed layer is unmounted (and its chunks
// leave the cache unless another layer shares them).
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	var id string
	var info snapshots.Info
	var removals []string
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		id, info, _, err = storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		if _, _, err := storage.Remove(ctx, key); err != nil {
			return fmt.Errorf("remove snapshot %s: %w", key, err)
		}
		removals, err = s.orphanDirs(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if _, ok := info.Labels[LabelRemote]; ok {
		if err := s.layers.Unmount(ctx, s.fsPath(id)); err != nil {
			s.log.Warn("unmount streamed layer", "snapshot", key, "err", err)
		}
	}
	s.removeDirs(ctx, removals)
	return nil
}

// Walk walks the snapshots.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, fn, filters...)
	})
}

// Cleanup removes the directories of removed snapshots.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	var removals []string
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		removals, err = s.orphanDirs(ctx)
		return err
	})
	if err != nil {
		return err
	}
	s.removeDirs(ctx, removals)
	return nil
}

// Close closes the metadata store. Streamed layers stay mounted: they
// belong to the FUSE manager, and running containers use them.
func (s *Snapshotter) Close() error { return s.ms.Close() }

// orphanDirs lists snapshot directories the metadata no longer knows.
func (s *Snapshotter) orphanDirs(ctx context.Context) ([]string, error) {
	ids, err := storage.IDMap(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(s.root, "snapshots"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if _, ok := ids[e.Name()]; !ok {
			out = append(out, filepath.Join(s.root, "snapshots", e.Name()))
		}
	}
	return out, nil
}

// removeDirs removes snapshot directories, unmounting a streamed layer left
// mounted first so that nothing under a FUSE mount is walked.
func (s *Snapshotter) removeDirs(ctx context.Context, dirs []string) {
	for _, d := range dirs {
		if err := s.layers.Unmount(ctx, filepath.Join(d, "fs")); err != nil {
			s.log.Warn("unmount before removal", "path", d, "err", err)
		}
		if err := os.RemoveAll(d); err != nil {
			s.log.Warn("remove snapshot directory", "path", d, "err", err)
		}
	}
}

func (s *Snapshotter) createSnapshot(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) (snap storage.Snapshot, info snapshots.Info, err error) {
	dir := filepath.Join(s.root, "snapshots")
	var tmp string
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		tmp, err = os.MkdirTemp(dir, "new-")
		if err != nil {
			return err
		}
		if err := os.Mkdir(filepath.Join(tmp, "fs"), 0o755); err != nil {
			return err
		}
		if kind == snapshots.KindActive {
			if err := os.Mkdir(filepath.Join(tmp, "work"), 0o711); err != nil {
				return err
			}
		}
		if snap, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...); err != nil {
			return fmt.Errorf("create snapshot %s: %w", key, err)
		}
		if _, info, _, err = storage.GetInfo(ctx, key); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, snap.ID)); err != nil {
			return err
		}
		tmp = ""
		return nil
	})
	if tmp != "" {
		_ = os.RemoveAll(tmp)
	}
	return snap, info, err
}

// mounts returns the mounts of a snapshot: a bind mount of its directory
// when it has no parent, else an overlay whose lower directories are its
// parents' (streamed layers among them, checked alive, and mounted again if
// a crash of the FUSE manager lost them).
func (s *Snapshotter) mounts(ctx context.Context, snap storage.Snapshot, key string) ([]mount.Mount, error) {
	if err := s.checkParents(ctx, key); err != nil {
		return nil, err
	}
	if len(snap.ParentIDs) == 0 {
		rw := "rw"
		if snap.Kind == snapshots.KindView {
			rw = "ro"
		}
		return []mount.Mount{{Type: "bind", Source: s.fsPath(snap.ID), Options: []string{rw, "rbind"}}}, nil
	}
	var options []string
	if snap.Kind == snapshots.KindActive {
		options = append(options, "workdir="+s.workPath(snap.ID), "upperdir="+s.fsPath(snap.ID))
	} else if len(snap.ParentIDs) == 1 {
		return []mount.Mount{{Type: "bind", Source: s.fsPath(snap.ParentIDs[0]), Options: []string{"ro", "rbind"}}}, nil
	}
	lower := make([]string, len(snap.ParentIDs))
	for i, id := range snap.ParentIDs {
		lower[i] = s.fsPath(id)
	}
	options = append(options, "lowerdir="+strings.Join(lower, ":"))
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: options}}, nil
}

// checkParents makes sure every streamed layer under key is served.
func (s *Snapshotter) checkParents(ctx context.Context, key string) error {
	type remote struct {
		key, id string
		ref     fusemanager.LayerRef
	}
	var remotes []remote
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		for k := key; k != ""; {
			id, info, _, err := storage.GetInfo(ctx, k)
			if err != nil {
				return err
			}
			if raw, ok := info.Labels[LabelLayer]; ok {
				var ref fusemanager.LayerRef
				if err := json.Unmarshal([]byte(raw), &ref); err != nil {
					return fmt.Errorf("snapshot %s: bad %s label: %w", k, LabelLayer, err)
				}
				remotes = append(remotes, remote{k, id, ref})
			}
			k = info.Parent
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range remotes {
		mp := s.fsPath(r.id)
		err := s.ensureMounted(ctx, r.key, r.id, r.ref)
		if err == nil {
			continue
		}
		if errors.Is(err, fusemanager.ErrLayerBad) {
			err = s.replaceBad(ctx, r.key, r.id, r.ref, err)
		}
		if err != nil {
			return fmt.Errorf("streamed layer %s at %s is unavailable (%v): %w", r.ref.SourceDigest, mp, err, errdefs.ErrUnavailable)
		}
	}
	return nil
}

// ensureMounted checks that a streamed layer is served and mounts it again
// if it is not, unless it stopped being streamed meanwhile (unpacked, or
// replaced): mounting over its local copy would hide it. Only a remount
// takes the replacement lock, which keeps the two apart: a container's
// start does not wait for a layer being unpacked while its mount serves.
func (s *Snapshotter) ensureMounted(ctx context.Context, key, id string, ref fusemanager.LayerRef) error {
	mp := s.fsPath(id)
	err := s.layers.Check(ctx, mp)
	if err == nil || errors.Is(err, fusemanager.ErrLayerBad) {
		return err
	}
	unlock := s.replacing.Lock(id)
	defer unlock()
	streamed := false
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, info, _, err := storage.GetInfo(ctx, key)
		_, streamed = info.Labels[LabelLayer]
		return err
	})
	if err != nil || !streamed {
		return err
	}
	err = s.layers.Check(ctx, mp)
	if err == nil || errors.Is(err, fusemanager.ErrLayerBad) {
		return err
	}
	if err := s.layers.Mount(ctx, mp, ref); err != nil {
		return err
	}
	return s.layers.Check(ctx, mp)
}

// streamedLayer is a snapshot whose layer is streamed: its name, its
// directory number and where the layer comes from.
type streamedLayer struct {
	key, id string
	ref     fusemanager.LayerRef
}

// streamedLayers lists the streamed layers, and the snapshots whose layer
// label cannot be read.
func (s *Snapshotter) streamedLayers(ctx context.Context) (out []streamedLayer, unreadable []string, err error) {
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			raw, ok := info.Labels[LabelLayer]
			if !ok {
				return nil
			}
			var ref fusemanager.LayerRef
			if json.Unmarshal([]byte(raw), &ref) != nil {
				unreadable = append(unreadable, info.Name)
				return nil
			}
			id, _, _, err := storage.GetInfo(ctx, info.Name)
			if err != nil {
				return err
			}
			out = append(out, streamedLayer{info.Name, id, ref})
			return nil
		})
	})
	if err != nil && !errdefs.IsNotFound(err) {
		return nil, nil, err
	}
	return out, unreadable, nil
}

// Restore makes sure every streamed layer is mounted, after the snapshotter
// or the FUSE manager started. Mounts that are alive are left alone, so a
// restart never disturbs running containers; the FUSE manager mounts the
// others from its local TOC store, without the registry.
func (s *Snapshotter) Restore(ctx context.Context) error {
	todo, unreadable, err := s.streamedLayers(ctx)
	if err != nil {
		return err
	}
	for _, name := range unreadable {
		s.log.Error("snapshot with an unreadable layer label", "snapshot", name)
	}
	var errs []error
	for _, t := range todo {
		mp := s.fsPath(t.id)
		if err := os.MkdirAll(mp, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if s.layers.Check(ctx, mp) == nil {
			continue
		}
		if err := s.layers.Mount(ctx, mp, t.ref); err != nil {
			s.log.Error("streamed layer could not be restored; containers using it fail until it is", "mountpoint", mp, "layer", t.ref.SourceDigest, "err", err)
			errs = append(errs, err)
		}
	}
	s.log.Info("streamed layers restored", "layers", len(todo), "failed", len(errs))
	return errors.Join(errs...)
}
