package hostiletar

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
)

// read lists the entries archive/tar reads from a layer, and the error
// that stopped it (nil at a clean end).
func read(t *testing.T, l Layer) ([]*tar.Header, error) {
	t.Helper()
	var b bytes.Buffer
	if _, err := l.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&b)
	var out []*tar.Header
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return out, err
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return out, err
		}
		out = append(out, h)
	}
}

func TestCasesAreDeterministicAndNamed(t *testing.T) {
	tag := regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,127}$`)
	seen := map[string]bool{}
	for _, c := range Cases() {
		if !tag.MatchString(c.Name) || seen[c.Name] {
			t.Errorf("case name %q is not a unique tag", c.Name)
		}
		seen[c.Name] = true
		if len(c.Layers) < 2 {
			t.Errorf("%s has %d layers, want the base and at least one more", c.Name, len(c.Layers))
		}
		if c.Large {
			continue
		}
		for i, l := range c.Layers {
			sum := func() [32]byte {
				h := sha256.New()
				if _, err := l.WriteTo(h); err != nil {
					t.Fatalf("%s layer %d: %v", c.Name, i, err)
				}
				return [32]byte(h.Sum(nil))
			}
			if sum() != sum() {
				t.Errorf("%s layer %d is not the same bytes twice", c.Name, i)
			}
		}
	}
}

func find(t *testing.T, name string) Case {
	t.Helper()
	for _, c := range Cases() {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no case %s", name)
	return Case{}
}

// TestNamesAreRawBytes: what archive/tar (which containerd and the
// converter use) reads back is the bytes the case wrote.
func TestNamesAreRawBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"invalid-utf8", []string{"bad-\xff", "bad-\xc3\x28", "dir-\xfe/", "dir-\xfe/f-\x80", "link-\xff", "surrogate-\xed\xa0\x80", "overlong-\xc0\xaf"}},
		{"dup-ff-fe", []string{"dup-\xff", "dup-\xfe"}},
		{"whiteout-invalid-utf8", []string{"cfg-\xff", "cfg-\xfe"}},
		{"traversal-dotdot", []string{"../../../../etc/sluice-pwned"}},
		{"root-entry-dot", []string{".", "after-dot"}},
		{"symlink-empty-name", []string{"etc/", "etc/passwd", "", "localpasswd"}},
	} {
		hdrs, err := read(t, find(t, tc.name).Layers[1])
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var got []string
		for _, h := range hdrs {
			got = append(got, h.Name)
		}
		if strings.Join(got, "\x00") != strings.Join(tc.want, "\x00") {
			t.Errorf("%s reads back as %q, want %q", tc.name, got, tc.want)
		}
	}
	hdrs, _ := read(t, find(t, "invalid-utf8").Layers[1])
	if hdrs[4].Linkname != "target-\xfe" {
		t.Errorf("the link target reads back as %q", hdrs[4].Linkname)
	}
	hdrs, _ = read(t, find(t, "name-200k").Layers[1])
	if len(hdrs) != 1 || len(hdrs[0].Name) != 800*256+1 {
		t.Errorf("name-200k reads back as %d entries, the first named with %d bytes", len(hdrs), len(hdrs[0].Name))
	}
}

func TestHeaders(t *testing.T) {
	hdrs, err := read(t, find(t, "owners-large").Layers[1])
	if err != nil || len(hdrs) != 2 || hdrs[0].Uid != 3000000 || hdrs[0].Gid != 4000000 || hdrs[1].Uid != 4294967294 {
		t.Errorf("owners-large reads back as %v (%v)", hdrs, err)
	}
	hdrs, err = read(t, find(t, "xattrs").Layers[1])
	if err != nil || hdrs[1].PAXRecords["SCHILY.xattr.user.bin"] != "\x00\xff\x01" || hdrs[0].PAXRecords["SCHILY.xattr.security.capability"] != capNetBindService {
		t.Errorf("xattrs read back as %v (%v)", hdrs, err)
	}
	hdrs, err = read(t, find(t, "type-contiguous").Layers[1])
	if err != nil || len(hdrs) != 1 || hdrs[0].Typeflag != tar.TypeCont || hdrs[0].Size != 5 {
		t.Errorf("type-contiguous reads back as %v (%v)", hdrs, err)
	}
	// archive/tar reads an old-style regular file as a file, or as a
	// directory when its name ends with a slash.
	hdrs, err = read(t, find(t, "type-old-regular").Layers[1])
	if err != nil || len(hdrs) != 2 || hdrs[0].Typeflag != tar.TypeReg || hdrs[1].Typeflag != tar.TypeDir {
		t.Errorf("type-old-regular reads back as %v (%v)", hdrs, err)
	}
	hdrs, err = read(t, find(t, "devices").Layers[1])
	if err != nil || hdrs[4].Devmajor != 4095 || hdrs[4].Devminor != 1048575 {
		t.Errorf("devices read back as %v (%v)", hdrs, err)
	}
}

func TestBrokenArchives(t *testing.T) {
	for _, name := range []string{"truncated-data", "truncated-header"} {
		if _, err := read(t, find(t, name).Layers[1]); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s reads with %v, want an unexpected EOF", name, err)
		}
	}
	for _, name := range []string{"unterminated", "trailing-garbage", "trailing-zeros", "empty-archive", "zero-byte-archive"} {
		if _, err := read(t, find(t, name).Layers[1]); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	var b bytes.Buffer
	if _, err := find(t, "zero-byte-archive").Layers[1].WriteTo(&b); err != nil || b.Len() != 0 {
		t.Errorf("zero-byte-archive has %d bytes (%v)", b.Len(), err)
	}
}

func TestLarge(t *testing.T) {
	hdrs, err := read(t, Many(3, 4))
	if err != nil || len(hdrs) != 3*5 || hdrs[14].Name != "many/d0002/f000003" {
		t.Fatalf("Many(3, 4) reads back as %d entries (%v)", len(hdrs), err)
	}
	if testing.Short() {
		return
	}
	n, err := find(t, "zero-bomb").Layers[1].WriteTo(io.Discard)
	if err != nil || n != 512+1<<30+1024 {
		t.Errorf("zero-bomb writes %d bytes (%v)", n, err)
	}
}
