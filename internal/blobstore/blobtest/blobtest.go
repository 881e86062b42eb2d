// Package blobtest is the behaviour suite of the blob store: what any
// bucket behind it (a local directory now, object storage next) must do
// for the registry. A backend's test runs it in one line:
//
//	blobtest.Run(t, func(t *testing.T) *blobstore.Store { ... })
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/blobstore"
)

// Open opens an empty store; the backend's test closes it with t.Cleanup.
type Open func(t *testing.T) *blobstore.Store

// Run runs the suite against the stores open makes, one per case.
func Run(t *testing.T, open Open) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.run(&harness{t: t, ctx: context.Background(), s: open(t)})
		})
	}
}

type harness struct {
	t   *testing.T
	ctx context.Context
	s   *blobstore.Store
}

func (h *harness) ok(err error) {
	h.t.Helper()
	if err != nil {
		h.t.Fatal(err)
	}
}

// write stores content as a blob through a Writer.
func (h *harness) write(content string) digest.Digest {
	h.t.Helper()
	d := digest.FromString(content)
	w, err := h.s.NewWriter(h.ctx, d)
	h.ok(err)
	if _, err := io.Copy(w, strings.NewReader(content)); err != nil {
		h.t.Fatal(err)
	}
	h.ok(w.Commit())
	return d
}

// read returns a blob's content, or fails the case.
func (h *harness) read(d digest.Digest) string {
	h.t.Helper()
	c, err := h.s.Open(h.ctx, d)
	h.ok(err)
	defer c.Close()
	b, err := io.ReadAll(c)
	h.ok(err)
	if c.Size != int64(len(b)) {
		h.t.Fatalf("blob %s says it has %d bytes and has %d", d, c.Size, len(b))
	}
	return string(b)
}

// absent fails the case if the blob's object is stored.
func (h *harness) absent(d digest.Digest, what string) {
	h.t.Helper()
	if ok, err := h.s.Exists(h.ctx, d); ok || err != nil {
		h.t.Fatalf("%s: the object exists (%v)", what, err)
	}
	if _, err := h.s.Open(h.ctx, d); !errors.Is(err, blobstore.ErrNotFound) {
		h.t.Fatalf("%s: Open: %v, want ErrNotFound", what, err)
	}
}

// parts writes each chunk as a part of upload id and returns their keys.
func (h *harness) parts(id string, chunks ...string) []string {
	h.t.Helper()
	var keys []string
	for i, c := range chunks {
		key := blobstore.PartKey(id, i, "n")
		n, err := h.s.WritePart(h.ctx, key, strings.NewReader(c))
		h.ok(err)
		if n != int64(len(c)) {
			h.t.Fatalf("part %d: wrote %d bytes of %d", i, n, len(c))
		}
		keys = append(keys, key)
	}
	return keys
}

// large is content bigger than one block of an object store's upload (8
// MiB for both the Azure and the S3 uploads), so that its write stages
// blocks or parts before it ends.
func large(seed byte) []byte {
	b := make([]byte, 9<<20+123)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

var cases = []struct {
	name string
	run  func(h *harness)
}{
	{"a written blob is read back, seeking", func(h *harness) {
		d := h.write("0123456789")
		if ok, err := h.s.Exists(h.ctx, d); !ok || err != nil {
			h.t.Fatalf("Exists: %v, %v", ok, err)
		}
		if got := h.read(d); got != "0123456789" {
			h.t.Fatalf("read %q", got)
		}
		c, err := h.s.Open(h.ctx, d)
		h.ok(err)
		defer c.Close()
		if _, err := c.Seek(6, io.SeekStart); err != nil {
			h.t.Fatal(err)
		}
		rest, _ := io.ReadAll(c)
		if string(rest) != "6789" {
			h.t.Fatalf("read %q after seeking to 6", rest)
		}
	}},
	{"a range is read from its offset, as an HTTP Range answer reads it", func(h *harness) {
		content := large(1)
		d := digest.FromBytes(content)
		w, err := h.s.NewWriter(h.ctx, d)
		h.ok(err)
		_, err = io.Copy(w, bytes.NewReader(content))
		h.ok(err)
		h.ok(w.Commit())
		c, err := h.s.Open(h.ctx, d)
		h.ok(err)
		defer c.Close()
		if end, err := c.Seek(0, io.SeekEnd); err != nil || end != int64(len(content)) || c.Size != end {
			h.t.Fatalf("seek to the end: %d, %v; size %d, want %d", end, err, c.Size, len(content))
		}
		for _, off := range []int64{5 << 20, 100, int64(len(content)) - 10} {
			if _, err := c.Seek(off, io.SeekStart); err != nil {
				h.t.Fatal(err)
			}
			got := make([]byte, 10)
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, content[off:off+10]) {
				h.t.Fatalf("10 bytes at %d: %v, %v", off, got, err)
			}
		}
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			h.t.Fatalf("read at the end: %d, %v", n, err)
		}
		if _, err := c.Seek(0, io.SeekStart); err != nil {
			h.t.Fatal(err)
		}
		all, err := io.ReadAll(c)
		h.ok(err)
		if !bytes.Equal(all, content) {
			h.t.Fatalf("read %d bytes from the start, want %d", len(all), len(content))
		}
	}},
	{"bytes that do not hash to the digest leave nothing", func(h *harness) {
		d := digest.FromString("expected")
		w, err := h.s.NewWriter(h.ctx, d)
		h.ok(err)
		_, _ = w.Write([]byte("something else"))
		if w.Size() != int64(len("something else")) {
			h.t.Fatalf("writer size %d", w.Size())
		}
		if err := w.Commit(); !errors.Is(err, blobstore.ErrDigestMismatch) {
			h.t.Fatalf("Commit: %v, want ErrDigestMismatch", err)
		}
		h.absent(d, "after a mismatch")
	}},
	{"a large write, staged in blocks, leaves nothing until it is verified", func(h *harness) {
		content := large(2)
		d := digest.FromBytes(content)
		w, err := h.s.NewWriter(h.ctx, d)
		h.ok(err)
		_, err = io.Copy(w, bytes.NewReader(content))
		h.ok(err)
		h.absent(d, "before Commit")
		w.Abort()
		h.absent(d, "after Abort")
		w, err = h.s.NewWriter(h.ctx, d)
		h.ok(err)
		_, err = w.Write(content[:len(content)-1])
		h.ok(err)
		_, err = w.Write([]byte{^content[len(content)-1]})
		h.ok(err)
		if err := w.Commit(); !errors.Is(err, blobstore.ErrDigestMismatch) {
			h.t.Fatalf("Commit of a changed last byte: %v, want ErrDigestMismatch", err)
		}
		h.absent(d, "after a mismatch")
		w, err = h.s.NewWriter(h.ctx, d)
		h.ok(err)
		_, err = io.Copy(w, bytes.NewReader(content))
		h.ok(err)
		h.ok(w.Commit())
		if got := h.read(d); got != string(content) {
			h.t.Fatalf("read %d bytes back, want %d", len(got), len(content))
		}
	}},
	{"an aborted write leaves nothing", func(h *harness) {
		d := digest.FromString("aborted")
		w, err := h.s.NewWriter(h.ctx, d)
		h.ok(err)
		_, _ = w.Write([]byte("abor"))
		w.Abort()
		h.absent(d, "after Abort")
		done := h.write("committed")
		w, err = h.s.NewWriter(h.ctx, digest.FromString("x"))
		h.ok(err)
		_, _ = w.Write([]byte("x"))
		h.ok(w.Commit())
		w.Abort()
		if h.read(done) != "committed" || h.read(digest.FromString("x")) != "x" {
			h.t.Fatal("Abort after Commit undid the blob")
		}
	}},
	{"deleting is idempotent", func(h *harness) {
		d := h.write("gone soon")
		h.ok(h.s.Delete(h.ctx, d))
		h.absent(d, "after Delete")
		h.ok(h.s.Delete(h.ctx, d))
		h.ok(h.s.DeleteKey(h.ctx, "uploads/none/000000-n"))
	}},
	{"parts are assembled into a verified blob", func(h *harness) {
		content := []string{"first part, ", "second part, ", "last"}
		d := digest.FromString(strings.Join(content, ""))
		h.ok(h.s.Assemble(h.ctx, d, h.parts("u1", content...), false))
		if got := h.read(d); got != strings.Join(content, "") {
			h.t.Fatalf("assembled %q", got)
		}
	}},
	{"one verified part becomes the blob", func(h *harness) {
		d := digest.FromString("the only part")
		h.ok(h.s.Assemble(h.ctx, d, h.parts("u1", "the only part"), true))
		if got := h.read(d); got != "the only part" {
			h.t.Fatalf("assembled %q", got)
		}
	}},
	{"parts that do not hash to the digest assemble nothing", func(h *harness) {
		d := digest.FromString("wanted")
		err := h.s.Assemble(h.ctx, d, h.parts("u1", "not ", "wanted"), false)
		if !errors.Is(err, blobstore.ErrDigestMismatch) {
			h.t.Fatalf("Assemble: %v, want ErrDigestMismatch", err)
		}
		h.absent(d, "after a mismatched assembly")
		err = h.s.Assemble(h.ctx, d, []string{blobstore.PartKey("u2", 0, "n")}, false)
		if !errors.Is(err, blobstore.ErrNotFound) {
			h.t.Fatalf("Assemble of a missing part: %v, want ErrNotFound", err)
		}
		h.absent(d, "after assembling a missing part")
	}},
	{"a part whose reader fails is not left", func(h *harness) {
		key := blobstore.PartKey("broken", 0, "n")
		broken := io.MultiReader(strings.NewReader("some bytes"), iotest.ErrReader(errors.New("connection reset")))
		if _, err := h.s.WritePart(h.ctx, key, broken); err == nil {
			h.t.Fatal("WritePart of a failing reader succeeded")
		}
		// One that fails after a block was staged.
		key2 := blobstore.PartKey("broken", 1, "n")
		broken = io.MultiReader(bytes.NewReader(large(3)), iotest.ErrReader(errors.New("connection reset")))
		if _, err := h.s.WritePart(h.ctx, key2, broken); err == nil || err.Error() != "connection reset" {
			h.t.Fatalf("WritePart of a large failing reader: %v, want the reader's error", err)
		}
		ids, err := h.s.UploadIDs(h.ctx)
		h.ok(err)
		if _, ok := ids["broken"]; ok {
			h.t.Fatal("the part of a failed write is stored")
		}
	}},
	{"uploads are listed by their parts and deleted with them", func(h *harness) {
		h.parts("u1", "a", "b")
		h.parts("u2", "c")
		ids, err := h.s.UploadIDs(h.ctx)
		h.ok(err)
		if len(ids) != 2 || ids["u1"].IsZero() || ids["u2"].IsZero() {
			h.t.Fatalf("uploads: %v", ids)
		}
		h.ok(h.s.DeleteUpload(h.ctx, "u1"))
		h.ok(h.s.DeleteUpload(h.ctx, "never"))
		ids, err = h.s.UploadIDs(h.ctx)
		h.ok(err)
		if _, ok := ids["u1"]; ok || len(ids) != 1 {
			h.t.Fatalf("uploads after deleting u1: %v", ids)
		}
	}},
	{"writers of one blob at once all leave it whole", func(h *harness) {
		content := bytes.Repeat([]byte("concurrent "), 10000)
		d := digest.FromBytes(content)
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w, err := h.s.NewWriter(h.ctx, d)
				if err != nil {
					errs[i] = err
					return
				}
				if _, err := io.Copy(w, bytes.NewReader(content)); err != nil {
					w.Abort()
					errs[i] = err
					return
				}
				errs[i] = w.Commit()
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				h.t.Fatalf("writer %d: %v", i, err)
			}
		}
		if got := h.read(d); got != string(content) {
			h.t.Fatalf("blob of %d bytes after concurrent writes, want %d", len(got), len(content))
		}
	}},
	{"keys spread blobs by digest and parts by upload", func(h *harness) {
		d := digest.FromString("x")
		if got, want := blobstore.BlobKey(d), fmt.Sprintf("blobs/sha256/%s/%s", d.Encoded()[:2], d.Encoded()); got != want {
			h.t.Fatalf("BlobKey %s, want %s", got, want)
		}
		if got := blobstore.PartKey("u", 3, "ab"); got != "uploads/u/000003-ab" {
			h.t.Fatalf("PartKey %s", got)
		}
	}},
}
