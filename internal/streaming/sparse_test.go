package streaming

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// makeSparseTree writes sparse files (one over 4 GiB) into a directory.
func makeSparseTree(t *testing.T) string {
	dir := t.TempDir()
	write := func(name string, size int64, pieces map[int64][]byte) {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for off, b := range pieces {
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
	}
	write("huge", 4<<30+12345, map[int64][]byte{0: randomData(1, 10000), 1 << 30: textData(70000), 4<<30 + 4096: randomData(2, 5000)})
	write("trailing-hole", 1<<20, map[int64][]byte{0: textData(8192)})
	write("all-hole", 3<<20, nil)
	write("dense", 20000, map[int64][]byte{0: randomData(3, 20000)})
	return dir
}

func TestSparseFiles(t *testing.T) {
	_, err := exec.LookPath("tar")
	testenv.Need(t, err == nil, "GNU tar not installed: cannot make sparse tar entries")
	dir := makeSparseTree(t)
	for _, format := range []string{"gnu", "pax"} {
		t.Run(format, func(t *testing.T) {
			out, err := exec.Command("tar", "--sparse", "--format="+format, "-C", dir, "-cf", "-", ".").Output()
			if err != nil {
				t.Fatalf("tar --sparse: %v", err)
			}
			blob, res := convertBytes(t, out, smallOpts)
			checkDecompress(t, blob, bytes.NewReader(out))
			r, _ := openBytes(t, blob, res)
			ctx := context.Background()
			for _, name := range []string{"huge", "trailing-hole", "all-hole", "dense"} {
				e, err := r.Lookup(name)
				if err != nil {
					t.Fatal(err)
				}
				src, _ := os.Open(filepath.Join(dir, name))
				st, _ := src.Stat()
				if (e.Sparse == nil) != (name == "dense") {
					t.Errorf("%s: sparse map %v", name, e.Sparse)
				}
				if e.Size != st.Size() {
					t.Errorf("%s: size %d, want %d", name, e.Size, st.Size())
				}
				for _, off := range []int64{0, 4000, 9990, 1<<30 - 10, 1<<30 + 69990, 4<<30 + 4000, 4<<30 + 9000, e.Size - 100} {
					if off < 0 || off >= e.Size {
						continue
					}
					want := make([]byte, min(20000, e.Size-off))
					src.ReadAt(want, off)
					got := make([]byte, len(want))
					if _, err := r.ReadAt(ctx, e, got, off); err != nil && err.Error() != "EOF" {
						t.Fatalf("%s at %d: %v", name, off, err)
					}
					if !bytes.Equal(got, want) {
						t.Errorf("%s: content at %d differs", name, off)
					}
				}
				src.Close()
			}
			// Reads of holes need no chunk; reads of data do.
			for _, c := range []struct {
				name    string
				off     int64
				n       int
				needing bool
			}{{"all-hole", 0, 1 << 20, false}, {"trailing-hole", 8192, 100000, false}, {"trailing-hole", 0, 100, true}, {"huge", 1 << 30, 10, true}, {"huge", 1<<30 + 80000, 4096, false}} {
				e, _ := r.Lookup(c.name)
				if got := r.ChunksOf(e, c.off, c.n); (len(got) > 0) != c.needing {
					t.Errorf("%s: a read of %d at %d needs chunks %v", c.name, c.n, c.off, got)
				}
			}
		})
	}
}
