package snapshotter

import (
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/internal/atomicfile"
)

// Installing the snapshotter on a node: containerdconfig.go adds it to
// containerd's config.toml, systemdunit.go writes the unit that runs it.

// InstallOptions say where and how to install the snapshotter on a node.
type InstallOptions struct {
	// ContainerdConfig is containerd's config.toml.
	ContainerdConfig string
	// ConfigVersion is 2 (containerd 1.6, 1.7) or 3 (containerd 2.x); 0
	// keeps the file's own, or asks `containerd --version`.
	ConfigVersion int
	// Name of the proxy plugin, "sluice".
	Name string
	// Address and Root of the snapshotter.
	Address, Root string
	// CRIDefault makes the snapshotter CRI's, with the snapshot labels on.
	CRIDefault bool
	// SystemdUnit is the unit file to write; empty writes none.
	SystemdUnit string
	// Binary is the snapshotter executable; ConfigFile its --config.
	Binary, ConfigFile string
}

// writeFile replaces path with data, whole, creating its directory (a
// fresh node may have no /etc/containerd yet).
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, mode)
}
