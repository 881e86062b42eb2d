package snapshotter

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallSystemdUnit writes the unit (its directory made if missing)
// once: a second install changes nothing.
func TestInstallSystemdUnit(t *testing.T) {
	o := InstallOptions{SystemdUnit: filepath.Join(t.TempDir(), "system", "sluice-snapshotter.service"), Binary: "/usr/local/bin/sluice-snapshotter", Address: DefaultAddress, Root: DefaultRoot}
	if changed, err := InstallSystemdUnit(o); err != nil || !changed {
		t.Fatal(err)
	}
	if changed, _ := InstallSystemdUnit(o); changed {
		t.Fatal("unit rewritten")
	}
	unit, _ := os.ReadFile(o.SystemdUnit)
	if !strings.Contains(string(unit), "KillMode=process") || !strings.Contains(string(unit), "ExecStart=/usr/local/bin/sluice-snapshotter --root /var/lib/sluice-snapshotter") {
		t.Fatalf("unit:\n%s", unit)
	}
}
