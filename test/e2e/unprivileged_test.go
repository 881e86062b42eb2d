//go:build linux

package e2e

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestDefaultDataAsUnprivilegedUser runs sluiced as `make run` does, with
// no --data (so ./data), from a fresh working directory, as a user who may
// write nowhere else; pushes an image; and finds every blob under ./data
// and nothing at /blobs, where the URL file://data/blobs (host "data",
// path "/blobs") once sent them. Only the address differs from `make run`:
// port 5000 may be taken.
func TestDefaultDataAsUnprivilegedUser(t *testing.T) {
	cred := unprivileged(t)
	work := userDir(t, cred)
	before := dirListing("/blobs")

	cmd := exec.Command(sluicedBin, "serve", "--listen", "127.0.0.1:0")
	cmd.Dir = work
	cmd.SysProcAttr = asUser(cred)
	cmd.Env = append(withoutSluiceSettings(os.Environ()), "SLUICE_LOG_FORMAT=json")
	reg := runSluiced(t, cmd)

	oc := newOCIClient(t, reg.addr).as("admin", generatedPassword(t, reg))
	img := newTestImage(t, newRand(t), 64<<10)
	oc.pushImage(t, "first/hour", "v1", img)
	// A chunked upload too: its parts are written under uploads/.
	chunked := randomBytes(newRand(t), 96<<10)
	if _, err := oc.pushBlob(context.Background(), "first/hour", chunked, 3); err != nil {
		t.Fatalf("chunked push: %v", err)
	}

	data := filepath.Join(work, "data")
	for d := range img.Blobs {
		checkBlobFile(t, data, d)
	}
	checkBlobFile(t, data, digest.FromBytes(chunked))
	for _, p := range []string{"sluice.db", "keys/current"} {
		if _, err := os.Stat(filepath.Join(data, p)); err != nil {
			t.Errorf("%s is not in the data directory: %v", p, err)
		}
	}
	if entries := dirListing(work); !slices.Equal(entries, []string{"data"}) {
		t.Errorf("the working directory holds %v; want only data", entries)
	}
	if after := dirListing("/blobs"); !slices.Equal(before, after) {
		t.Errorf("/blobs changed from %v to %v", before, after)
	}
}

// TestStartupErrorsAsUnprivilegedUser starts sluiced where it may not
// write and wants an error that names the path and the cause, not SQLite's
// "unable to open database file (14)".
func TestStartupErrorsAsUnprivilegedUser(t *testing.T) {
	cred := unprivileged(t)
	tests := []struct {
		name string
		// prepare makes the data directory unusable and returns the path
		// the error must name.
		prepare func(t *testing.T, data string) string
	}{
		{"read-only data directory", func(t *testing.T, data string) string {
			mkdirMode(t, data, 0o555)
			return filepath.Join(data, "sluice.db")
		}},
		{"read-only database file", func(t *testing.T, data string) string {
			mkdirMode(t, data, 0o777)
			db := filepath.Join(data, "sluice.db")
			if err := os.WriteFile(db, nil, 0o444); err != nil {
				t.Fatal(err)
			}
			return db
		}},
		{"read-only key directory", func(t *testing.T, data string) string {
			mkdirMode(t, data, 0o777)
			keys := filepath.Join(data, "keys")
			mkdirMode(t, keys, 0o555)
			return keys
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			work := userDir(t, cred)
			path := tc.prepare(t, filepath.Join(work, "data"))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, sluicedBin, "serve", "--listen", "127.0.0.1:0")
			cmd.Dir = work
			cmd.SysProcAttr = asUser(cred)
			cmd.Env = withoutSluiceSettings(os.Environ())
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("sluiced exited cleanly:\n%s", out)
			}
			if !strings.Contains(string(out), path) || !strings.Contains(string(out), "permission denied") {
				t.Fatalf("the error does not name %s and the cause:\n%s", path, out)
			}
		})
	}
}

// unprivileged is the user a test runs sluiced as: nobody when the tests
// run as root, and nil (the tests' own user, already unprivileged)
// otherwise.
func unprivileged(t *testing.T) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	uid, gid := uint32(65534), uint32(65534)
	if u, err := user.Lookup("nobody"); err == nil {
		if n, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			uid = uint32(n)
		}
		if n, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			gid = uint32(n)
		}
	}
	return &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}
}

// asUser is dieWithTest for a process that runs as cred (nil: as the
// test).
func asUser(cred *syscall.Credential) *syscall.SysProcAttr {
	attr := dieWithTest()
	attr.Credential = cred
	return attr
}

// userDir is a new empty directory that cred's user owns, inside
// directories that user may enter.
func userDir(t *testing.T, cred *syscall.Credential) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{filepath.Dir(root), root} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(root, "work")
	mkdirMode(t, dir, 0o755)
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// mkdirMode makes dir with exactly mode, whatever the umask.
func mkdirMode(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}

// withoutSluiceSettings drops the SLUICE_* variables of the environment,
// so that sluiced sees its defaults.
func withoutSluiceSettings(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "SLUICE_") })
}

// generatedPassword is the admin password sluiced printed on its first
// start: the line after the announcement.
func generatedPassword(t *testing.T, reg *sluiced) string {
	t.Helper()
	lines := strings.Split(reg.logText(), "\n")
	for i, line := range lines {
		if !strings.Contains(line, "Generated password") {
			continue
		}
		for _, next := range lines[i+1:] {
			if pw := strings.TrimSpace(next); pw != "" {
				return pw
			}
		}
	}
	t.Fatalf("sluiced printed no generated password:\n%s", reg.logText())
	return ""
}

// checkBlobFile fails the test unless blob d is a file of the blob store
// in data.
func checkBlobFile(t *testing.T, data string, d digest.Digest) {
	t.Helper()
	p := filepath.Join(data, "blobs", "blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded())
	if info, err := os.Stat(p); err != nil || !info.Mode().IsRegular() {
		t.Errorf("blob %s is not at %s: %v", d, p, err)
	}
}

// dirListing names what dir holds; nil when it does not exist.
func dirListing(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names
}
