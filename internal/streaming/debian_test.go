package streaming

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// debianRootfs returns a Debian bookworm minbase root filesystem, built
// once with debootstrap into a cache directory ($SLUICE_TEST_CACHE, default
// /var/cache/sluice-test) and reused by later runs. When debootstrap is
// missing, the test is not root, or the build fails (no network), it skips
// the test, or fails it under make test.
func debianRootfs(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("SLUICE_TEST_CACHE")
	if cache == "" {
		cache = "/var/cache/sluice-test"
	}
	root := filepath.Join(cache, "debian-bookworm-minbase")
	if _, err := os.Stat(filepath.Join(root, ".sluice-complete")); err == nil {
		return root
	}
	_, err := exec.LookPath("debootstrap")
	testenv.Need(t, err == nil, "debootstrap not installed (make test-deps installs it): no Debian root filesystem to test with")
	testenv.Root(t, "debootstrap builds the Debian root filesystem")
	tmp := root + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		testenv.Missing(t, "cannot create the cache directory %s: %v", cache, err)
	}
	t.Logf("building a Debian minbase root filesystem in %s (once; later runs reuse it)", root)
	cmd := exec.Command("debootstrap", "--variant=minbase", "bookworm", tmp, "http://deb.debian.org/debian")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		testenv.Missing(t, "debootstrap failed (no network to the Debian mirror?): %v\n%s", err, lastLines(out, 5))
	}
	if err := os.WriteFile(filepath.Join(tmp, ".sluice-complete"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	return root
}

func lastLines(b []byte, n int) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return bytes.Join(lines[max(0, len(lines)-n):], []byte("\n"))
}

// TestDebianRootfs converts a real Debian root filesystem layer and checks
// that zstd -d gives back the original tar byte for byte and that every
// file reads back, whole and at random offsets. Under the race detector it
// uses part of the tree (etc and usr/bin) to stay fast.
func TestDebianRootfs(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the Debian root filesystem test")
	}
	root := debianRootfs(t)
	dir := t.TempDir()
	tarPath, blobPath := filepath.Join(dir, "layer.tar"), filepath.Join(dir, "layer.szst")
	args := []string{"--numeric-owner", "--xattrs", "--xattrs-include=*", "--exclude=./.sluice-complete", "-C", root, "-cf", tarPath}
	if raceEnabled {
		args = append(args, "./etc", "./usr/bin")
	} else {
		args = append(args, ".")
	}
	if out, err := exec.Command("tar", args...).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	src, _ := os.Open(tarPath)
	defer src.Close()
	dst, _ := os.Create(blobPath)
	defer dst.Close()
	res, err := Convert(context.Background(), src, dst, Options{})
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	t.Logf("%d entries, %d chunks: %d bytes of tar -> %d", res.Entries, res.Chunks, res.UncompressedSize, res.Size)

	src.Seek(0, io.SeekStart)
	want := sha256.New()
	io.Copy(want, src)
	if _, err := exec.LookPath("zstd"); err == nil {
		dst.Seek(0, io.SeekStart)
		cmd := exec.Command("zstd", "-d", "-c", "-q")
		cmd.Stdin = dst
		got := sha256.New()
		cmd.Stdout = got
		if err := cmd.Run(); err != nil {
			t.Fatalf("zstd -d: %v", err)
		}
		if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Fatalf("zstd -d of the converted layer differs from the original tar")
		}
	} else {
		t.Log("zstd not installed: checking decompression with the Go decoder only")
	}
	dst.Seek(0, io.SeekStart)
	src.Seek(0, io.SeekStart)
	checkDecompress(t, mustReadAll(t, dst), src)

	r, err := Open(context.Background(), ReaderAtRanges(dst), res.Size, WithTOC(res.TOCDigest, res.TOCOffset, res.TOCSize), WithDiffID(res.DiffID))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	src.Seek(0, io.SeekStart)
	checkEntries(t, r, src, 7)
	if err := r.FetchAll(context.Background(), nil); err != nil {
		t.Fatalf("FetchAll: %v", err)
	}
}

func mustReadAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
