package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// A chunk the store cannot write is the registry's failure, not the
// client's: it must not come back as ErrUploadInvalid (400, with the
// store's paths in the message). A body that breaks off is the client's.
func TestChunkFailuresSayWhoseFault(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	content := []byte("a chunk of a layer")

	u, err := e.reg.StartUpload(ctx, "app", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.reg.WriteChunk(ctx, "app", u.ID, Chunk{Start: 0, Length: 4, Body: &brokenBody{data: content[:2]}})
	if !errors.Is(err, ErrUploadInvalid) {
		t.Fatalf("body broken off: %v; want ErrUploadInvalid", err)
	}

	// A file where the store keeps upload parts and blobs: every write
	// fails, for root too.
	for _, dir := range []string{"uploads", "blobs"} {
		p := filepath.Join(e.dir, "blobs", dir)
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err = e.reg.WriteChunk(ctx, "app", u.ID, Chunk{Start: 0, Length: int64(len(content)), Body: bytes.NewReader(content)})
	if err == nil || errors.Is(err, ErrUploadInvalid) || !strings.Contains(err.Error(), filepath.Join(e.dir, "blobs", "uploads")) {
		t.Fatalf("chunk the store cannot write: %v; want a store error naming the directory", err)
	}
	d := digest.FromBytes(content)
	_, err = e.reg.PutBlob(ctx, "app", d, bytes.NewReader(content))
	if err == nil || errors.Is(err, ErrUploadInvalid) {
		t.Fatalf("blob the store cannot write: %v; want a store error", err)
	}
}

// brokenBody returns data, then fails as a dropped connection does.
type brokenBody struct{ data []byte }

func (b *brokenBody) Read(p []byte) (int, error) {
	if len(b.data) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

// The closing PUT sent again, by a client that lost the answer to the
// first, finds the upload completed: it gets the blob, not "upload
// unknown". A PUT for a blob the repository does not hold still is.
func TestCompletingAgain(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	content := []byte("a blob whose answer was lost")
	d := digest.FromBytes(content)
	u, err := e.reg.StartUpload(ctx, "app", "")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		st, err := e.reg.CompleteUpload(ctx, "app", u.ID, d, Chunk{Start: -1, Length: -1, Body: bytes.NewReader(content)})
		if err != nil || st.Size != int64(len(content)) {
			t.Fatalf("closing PUT: %+v, %v", st, err)
		}
	}
	other := digest.FromString("not in the repository")
	if _, err := e.reg.CompleteUpload(ctx, "app", u.ID, other, Chunk{Start: -1, Length: -1, Body: bytes.NewReader(nil)}); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("closing PUT of a finished upload for another blob: %v, want ErrUploadUnknown", err)
	}
	if _, err := e.reg.CompleteUpload(ctx, "elsewhere", u.ID, d, Chunk{Start: -1, Length: -1, Body: bytes.NewReader(content)}); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("closing PUT of a finished upload in a repository without the blob: %v, want ErrUploadUnknown", err)
	}
}
