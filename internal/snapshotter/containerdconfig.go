package snapshotter

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// InstallContainerdConfig adds the snapshotter to containerd's config,
// keeping everything else; running it again changes nothing. It reports
// whether the file changed (a backup of the original is kept beside it).
func InstallContainerdConfig(o InstallOptions) (bool, error) {
	cfg := map[string]any{}
	old, err := os.ReadFile(o.ContainerdConfig)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if len(old) > 0 {
		if err := toml.Unmarshal(old, &cfg); err != nil {
			return false, fmt.Errorf("%s: %w", o.ContainerdConfig, err)
		}
	}
	version := o.ConfigVersion
	if v, ok := cfg["version"].(int64); ok && version == 0 {
		version = int(v)
	}
	if version == 0 {
		if version, err = detectConfigVersion(); err != nil {
			return false, err
		}
	}
	if version != 2 && version != 3 {
		return false, fmt.Errorf("containerd config version %d: only 2 (containerd 1.6/1.7) and 3 (containerd 2.x) are supported", version)
	}
	addSnapshotter(cfg, version, o)
	out, err := toml.Marshal(cfg)
	if err != nil {
		return false, err
	}
	if len(old) > 0 {
		var before map[string]any
		_ = toml.Unmarshal(old, &before)
		if canon, err := toml.Marshal(before); err == nil && bytes.Equal(canon, out) {
			return false, nil
		}
		backup := o.ContainerdConfig + ".before-sluice"
		if _, err := os.Stat(backup); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(backup, old, 0o644); err != nil {
				return false, err
			}
		}
	}
	header := []byte("# Edited by sluice-snapshotter install: the \"" + o.Name + "\" proxy snapshotter.\n")
	return true, writeFile(o.ContainerdConfig, append(header, out...), 0o644)
}

// addSnapshotter edits a containerd config of the given version (2 or 3):
// the proxy plugin, the transfer service's unpacking (3) and, with
// CRIDefault, CRI's snapshotter with the snapshot labels on.
func addSnapshotter(cfg map[string]any, version int, o InstallOptions) {
	cfg["version"] = version
	plugin := table(table(cfg, "proxy_plugins"), o.Name)
	plugin["type"] = "snapshot"
	plugin["address"] = o.Address
	exports := table(plugin, "exports")
	exports["root"] = filepath.Join(o.Root, "snapshotter")
	plugins := table(cfg, "plugins")
	if version == 3 {
		exports["enable_remote_snapshot_annotations"] = "true"
		addUnpackConfig(table(plugins, "io.containerd.transfer.v1.local"), o.Name)
	}
	if o.CRIDefault {
		var cri map[string]any
		if version == 2 {
			cri = table(table(plugins, "io.containerd.grpc.v1.cri"), "containerd")
		} else {
			cri = table(plugins, "io.containerd.cri.v1.images")
		}
		cri["snapshotter"] = o.Name
		cri["disable_snapshot_annotations"] = false
	}
}

// table returns m[key] as a table, creating it.
func table(m map[string]any, key string) map[string]any {
	if t, ok := m[key].(map[string]any); ok {
		return t
	}
	t := map[string]any{}
	m[key] = t
	return t
}

// addUnpackConfig makes the transfer service (containerd ≥ 2.1) unpack
// Linux images with the snapshotter too; overlayfs stays, so plain pulls
// work as before.
func addUnpackConfig(transfer map[string]any, name string) {
	list, _ := transfer["unpack_config"].([]any)
	if len(list) == 0 {
		list = []any{map[string]any{"platform": "linux", "snapshotter": "overlayfs"}}
	}
	for _, e := range list {
		if m, ok := e.(map[string]any); ok && m["snapshotter"] == name {
			transfer["unpack_config"] = list
			return
		}
	}
	transfer["unpack_config"] = append(list, map[string]any{"platform": "linux", "snapshotter": name})
}

var versionRE = regexp.MustCompile(`\bv?(\d+)\.\d+`)

// detectConfigVersion asks the installed containerd which config version it
// reads.
func detectConfigVersion() (int, error) {
	out, err := exec.Command("containerd", "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("cannot tell containerd's version (containerd --version: %v); pass --config-version 2 or 3", err)
	}
	fields := strings.Fields(string(out))
	for _, f := range fields[min(2, len(fields)):] {
		if m := versionRE.FindStringSubmatch(f); m != nil {
			if m[1] == "1" {
				return 2, nil
			}
			return 3, nil
		}
	}
	return 0, fmt.Errorf("cannot read containerd's version from %q; pass --config-version 2 or 3", strings.TrimSpace(string(out)))
}
