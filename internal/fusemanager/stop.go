package fusemanager

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// ErrStopping refuses a mount while the manager stops.
var ErrStopping = errors.New("the FUSE manager is stopping")

// ErrInUse is Stop's answer while something uses a mounted layer.
var ErrInUse = errors.New("streamed layers are in use")

// InUse is a mounted layer that something on the node uses.
type InUse struct {
	Mountpoint string        `json:"mountpoint"`
	Image      string        `json:"image,omitempty"`
	Layer      digest.Digest `json:"layer"`
	// By says what uses it: the mountpoints of overlays that have it as
	// a lower directory (a container's root file system) and of its bind
	// mounts, or "open files" when the kernel refused to unmount it.
	By []string `json:"by"`
}

// InUse lists the mounted layers that something uses.
func (m *Manager) InUse() ([]InUse, error) {
	return inUse(append(m.mountList(), m.retiringList()...))
}

// retiringList lists the mounts off their mountpoints still served.
func (m *Manager) retiringList() []*mounted {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*mounted, 0, len(m.retiring))
	for lm := range m.retiring {
		out = append(out, lm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].mountpoint < out[j].mountpoint })
	return out
}

// mountList lists the mounts, by mountpoint.
func (m *Manager) mountList() []*mounted {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*mounted, 0, len(m.mounts))
	for _, lm := range m.mounts {
		out = append(out, lm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].mountpoint < out[j].mountpoint })
	return out
}

// Stop unmounts every layer, then ends Serve. While something uses a
// layer it unmounts nothing and returns the layers in use with ErrInUse;
// with force it detaches them lazily instead, and the containers reading
// them get errors once the manager has exited. A process holding a file
// open in a layer makes the kernel refuse: that layer stays mounted (the
// others are unmounted all the same) and is returned with ErrInUse. A
// layer mounted while Stop runs is unmounted by Close as the manager
// exits. The chunk cache and the TOCs stay on disk: the snapshotter mounts
// its layers again when it starts.
func (m *Manager) Stop(force bool) (unmounted int, busy []InUse, err error) {
	m.mu.Lock()
	if m.stopping {
		m.mu.Unlock()
		return 0, nil, ErrStopping
	}
	m.stopping = true
	m.mu.Unlock()
	// Mounts off their mountpoints count too: containers hold them.
	mounts := m.mountList()
	if busy, err = inUse(append(mounts, m.retiringList()...)); err == nil && len(busy) > 0 && !force {
		err = ErrInUse
	}
	if err == nil {
		var stuck []InUse
		for _, lm := range mounts {
			if err := m.unmountToStop(lm, force); err != nil {
				m.log.Warn("a layer stays mounted", "mountpoint", lm.mountpoint, "err", err)
				stuck = append(stuck, InUse{Mountpoint: lm.mountpoint, Image: lm.ref.ImageRef, Layer: lm.ref.SourceDigest, By: []string{"open files"}})
				continue
			}
			unmounted++
		}
		if err := m.saveState(); err != nil {
			m.log.Warn("save state", "err", err)
		}
		if len(stuck) > 0 {
			busy, err = stuck, ErrInUse
		}
	}
	if err != nil {
		m.mu.Lock()
		m.stopping = false
		m.mu.Unlock()
		return unmounted, busy, err
	}
	m.log.Info("stopping: every layer is unmounted", "layers", unmounted, "force", force)
	close(m.stopped)
	return unmounted, busy, nil
}

// unmountToStop unmounts a layer for Stop: lazily with force, else only if
// the kernel agrees, then waits for its FUSE connection to end.
func (m *Manager) unmountToStop(lm *mounted, force bool) error {
	unlock := m.mountpoints.Lock(lm.mountpoint)
	defer unlock()
	flags := 0
	if force {
		flags = syscall.MNT_DETACH
	}
	// EINVAL: it is no longer mounted there (unmounted behind our back).
	if err := syscall.Unmount(lm.mountpoint, flags); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	m.mu.Lock()
	delete(m.mounts, lm.mountpoint)
	m.mu.Unlock()
	lm.shutdown()
	if !force {
		select {
		case <-lm.gone:
			lm.reader.Close()
		case <-time.After(10 * time.Second):
			m.log.Warn("an unmounted layer's FUSE connection did not end", "mountpoint", lm.mountpoint)
		}
	}
	m.log.Info("layer unmounted", "mountpoint", lm.mountpoint, "layer", lm.ref.SourceDigest, "lazily", force)
	return nil
}

// inUse lists the mounts that a container, or anything else, uses: an
// overlay has it as a lower directory, or it is bind-mounted elsewhere.
// Only the mount table tells: unmounting a lower directory of an overlay
// succeeds (the overlay holds a private clone of the mount) and leaves its
// FUSE connection serving the overlay.
func inUse(mounts []*mounted) ([]InUse, error) {
	if len(mounts) == 0 {
		return nil, nil
	}
	table, err := mountinfo.GetMounts(nil)
	if err != nil {
		return nil, fmt.Errorf("read the mount table: %w", err)
	}
	var out []InUse
	for _, lm := range mounts {
		mp, _ := filepath.Abs(lm.mountpoint)
		var by []string
		for _, e := range table {
			if (e.FSType == "overlay" && overlayUses(e.VFSOptions, mp)) ||
				(unix.Mkdev(uint32(e.Major), uint32(e.Minor)) == lm.dev && e.Mountpoint != mp) {
				by = append(by, e.Mountpoint)
			}
		}
		if len(by) > 0 {
			out = append(out, InUse{Mountpoint: lm.mountpoint, Image: lm.ref.ImageRef, Layer: lm.ref.SourceDigest, By: by})
		}
	}
	return out, nil
}

// overlayUses reports whether an overlay's options list dir as a lower
// directory: in lowerdir=A:B (the paths relative to where containerd
// mounted from when the list is long) or, from Linux 6.8, one at a time in
// lowerdir+= and datadir+=.
func overlayUses(options, dir string) bool {
	for _, opt := range strings.Split(options, ",") {
		key, value, _ := strings.Cut(opt, "=")
		var dirs []string
		switch key {
		case "lowerdir":
			dirs = strings.Split(value, ":")
		case "lowerdir+", "datadir+":
			dirs = []string{value}
		}
		for _, d := range dirs {
			switch {
			case d == "":
			case filepath.IsAbs(d) && (d == dir || strings.HasPrefix(d, dir+"/")):
				return true
			case !filepath.IsAbs(d) && strings.HasSuffix(dir, "/"+filepath.Clean(d)):
				return true
			}
		}
	}
	return false
}
