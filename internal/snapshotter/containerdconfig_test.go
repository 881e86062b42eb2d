package snapshotter

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

func TestInstallContainerdConfig(t *testing.T) {
	for _, tc := range []struct {
		version  int
		existing string
		want     []string
	}{
		{2, "", []string{`[plugins.'io.containerd.grpc.v1.cri'.containerd]`, `snapshotter = 'sluice'`, `disable_snapshot_annotations = false`, `[proxy_plugins.sluice]`, `type = 'snapshot'`}},
		{2, "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.9\"\n",
			[]string{`sandbox_image = 'registry.k8s.io/pause:3.9'`, `snapshotter = 'sluice'`}},
		{3, "", []string{`[plugins.'io.containerd.cri.v1.images']`, `enable_remote_snapshot_annotations = 'true'`, `snapshotter = 'overlayfs'`, `[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]`}},
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, "config.toml")
		if tc.existing != "" {
			if err := os.WriteFile(path, []byte(tc.existing), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		o := InstallOptions{ContainerdConfig: path, ConfigVersion: tc.version, Name: "sluice", Address: DefaultAddress, Root: DefaultRoot, CRIDefault: true}
		changed, err := InstallContainerdConfig(o)
		if err != nil || !changed {
			t.Fatalf("v%d: changed=%v %v", tc.version, changed, err)
		}
		b, _ := os.ReadFile(path)
		for _, w := range tc.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("v%d config lacks %s:\n%s", tc.version, w, b)
			}
		}
		var parsed map[string]any
		if err := toml.Unmarshal(b, &parsed); err != nil {
			t.Fatalf("written config does not parse: %v", err)
		}
		if parsed["version"] != int64(tc.version) {
			t.Errorf("version %v", parsed["version"])
		}
		// Idempotent.
		if changed, err := InstallContainerdConfig(o); err != nil || changed {
			t.Fatalf("second install changed=%v %v", changed, err)
		}
		if tc.existing != "" {
			if backup, err := os.ReadFile(path + ".before-sluice"); err != nil || string(backup) != tc.existing {
				t.Fatalf("backup: %q %v", backup, err)
			}
		}
	}
}
