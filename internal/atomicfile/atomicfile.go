// Package atomicfile writes files that are never seen half written: the
// bytes go to a temporary file beside the target, which is synced, renamed
// over the target, and the directory synced, so after a crash the file is
// either the old one or the new one, whole.
package atomicfile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, with the given permissions.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ProbeBytes is what Probe writes: enough that a file system with only
// crumbs left counts as full.
const ProbeBytes = 64 << 10

// Probe checks that dir can take writes now: it writes and syncs
// ProbeBytes in a temporary file there and removes it. Its error names the
// file and the system's cause (no space left on device, read-only file
// system).
func Probe(ctx context.Context, dir string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".sluice-probe-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(make([]byte, ProbeBytes))
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}
