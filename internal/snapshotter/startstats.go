package snapshotter

import (
	"context"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots/storage"
)

// FetchCounter is the optional side of a LayerMounter that says how many
// bytes the layer mounted at a mountpoint has fetched from its registry
// (the FUSE manager's client has it).
type FetchCounter interface {
	Fetched(ctx context.Context, mountpoint string) (int64, error)
}

// streamedParent is a streamed layer under a snapshot, with the image
// whose pull prepared it.
type streamedParent struct {
	id, image, layer string
}

// noteStart records, when containerd prepares a container's root file
// system (key) on streamed layers, how many bytes of each the registry
// had sent: what the container found fetched when it started. Only the
// first container after a layer's pull is recorded; later ones, and a
// snapshotter or mounter that cannot tell, record nothing. It never fails
// the Prepare.
func (s *Snapshotter) noteStart(ctx context.Context, key string) {
	counter, ok := s.layers.(FetchCounter)
	if s.status == nil || !ok {
		return
	}
	parents, err := s.streamedParents(ctx, key)
	if err != nil {
		s.log.Warn("could not list the streamed layers of a container's snapshot", "snapshot", key, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, p := range parents {
		if !s.status.WantsStart(p.image, p.layer) {
			continue
		}
		n, err := counter.Fetched(ctx, s.fsPath(p.id))
		if err != nil {
			s.log.Warn("could not ask the FUSE manager what a streamed layer fetched", "image", p.image, "layer", p.layer, "err", err)
			continue
		}
		noted, err := s.status.NoteStart(p.image, p.layer, n)
		if err != nil {
			s.log.Warn("could not write the status file", "err", err)
		}
		if noted {
			s.metrics.fetchedBeforeStart.Observe(float64(n))
			s.log.Info("first container on a streamed layer", "image", p.image, "layer", p.layer, "snapshot", key, "fetchedBeforeStart", n)
		}
	}
}

// streamedParents lists the streamed layers under key, nearest first.
func (s *Snapshotter) streamedParents(ctx context.Context, key string) ([]streamedParent, error) {
	var out []streamedParent
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		for k := key; k != ""; {
			id, info, _, err := storage.GetInfo(ctx, k)
			if err != nil {
				return err
			}
			if _, ok := info.Labels[LabelLayer]; ok && info.Labels[labelImageRef] != "" && info.Labels[labelLayerDigest] != "" {
				out = append(out, streamedParent{id: id, image: info.Labels[labelImageRef], layer: info.Labels[labelLayerDigest]})
			}
			k = info.Parent
		}
		return nil
	})
	return out, err
}
