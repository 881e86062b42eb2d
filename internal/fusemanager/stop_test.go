package fusemanager

import "testing"

func TestOverlayUses(t *testing.T) {
	const layer = "/var/lib/sluice-snapshotter/snapshotter/snapshots/12/fs"
	for _, tc := range []struct {
		name, options string
		want          bool
	}{
		{"one lower directory", "lowerdir=" + layer, true},
		{"among several", "lowerdir=/x/snapshots/13/fs:" + layer + ":/x/snapshots/11/fs,upperdir=/u,workdir=/w", true},
		{"a path below it", "lowerdir=" + layer + "/sub", true},
		{"relative, as containerd writes long lists", "lowerdir=12/fs:11/fs,upperdir=/u", true},
		{"appended one at a time (Linux 6.8)", "lowerdir+=/x/snapshots/13/fs,lowerdir+=" + layer, true},
		{"a data-only layer", "datadir+=" + layer, true},
		{"another snapshot with the same ending", "lowerdir=/other/snapshots/112/fs", false},
		{"a relative path of another snapshot", "lowerdir=112/fs", false},
		{"only the upper directory", "upperdir=" + layer + ",workdir=/w", false},
		{"empty", "", false},
	} {
		if got := overlayUses(tc.options, layer); got != tc.want {
			t.Errorf("%s: overlayUses(%q) = %v, want %v", tc.name, tc.options, got, tc.want)
		}
	}
}
