package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/blobstore"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/testbackend"
	"github.com/sluicehq/sluice/internal/testclock"
)

type env struct {
	dir   string
	clock *testclock.Clock
	meta  *metadata.Store
	blobs *blobstore.Store
	reg   *Registry
	// dsn and bucket, when set, put the stores in PostgreSQL and object
	// storage instead of the directory.
	dsn, bucket string
}

func TestMain(m *testing.M) { testbackend.Main(m) }

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), clock: testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
	e.open(t)
	t.Cleanup(e.close)
	return e
}

// onEachBackend runs a test on the embedded stores and on the shared ones
// (PostgreSQL and S3).
func onEachBackend(t *testing.T, test func(t *testing.T, e *env)) {
	t.Run("sqlite+dir", func(t *testing.T) { test(t, newEnv(t)) })
	t.Run("postgres+s3", func(t *testing.T) {
		e := &env{dir: t.TempDir(), clock: testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
			dsn: testbackend.Postgres(t), bucket: testbackend.S3(t)}
		e.open(t)
		t.Cleanup(e.close)
		test(t, e)
	})
}

// open (re)opens the stores over the environment's directory, as a restart
// of sluiced would.
func (e *env) open(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	var err error
	if e.dsn != "" {
		e.meta, err = metadata.OpenPostgres(ctx, e.dsn, metadata.WithClock(e.clock.Now))
	} else {
		e.meta, err = metadata.OpenSQLite(ctx, filepath.Join(e.dir, "sluice.db"), metadata.WithClock(e.clock.Now))
	}
	if err != nil {
		t.Fatal(err)
	}
	if e.bucket != "" {
		e.blobs, err = blobstore.OpenURL(ctx, e.bucket)
	} else {
		e.blobs, err = blobstore.OpenDir(filepath.Join(e.dir, "blobs"))
	}
	if err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.Now = e.clock.Now
	e.reg = New(e.meta, e.blobs, opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func (e *env) close() {
	if e.meta != nil {
		e.meta.Close()
		e.blobs.Close()
		e.meta = nil
	}
}

// partsStored reports whether the blob store holds parts of the upload.
func (e *env) partsStored(t *testing.T, id string) bool {
	t.Helper()
	ids, err := e.blobs.UploadIDs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, ok := ids[id]
	return ok
}

func (e *env) objectExists(t *testing.T, d digest.Digest) bool {
	t.Helper()
	ok, err := e.blobs.Exists(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func put(t *testing.T, r *Registry, repo string, content []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(content)
	if _, err := r.PutBlob(context.Background(), repo, d, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	return d
}

func imageManifest(config, layer digest.Digest, configSize, layerSize int) []byte {
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
		"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},
		"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}`, config, configSize, layer, layerSize))
}

func TestGarbageCollection(t *testing.T) { onEachBackend(t, testGarbageCollection) }

func testGarbageCollection(t *testing.T, e *env) {
	ctx := context.Background()
	cfg := put(t, e.reg, "app", []byte("config"))
	layer := put(t, e.reg, "app", []byte("layer"))
	orphan := put(t, e.reg, "app", []byte("orphan"))
	shared := put(t, e.reg, "app", []byte("shared"))
	put(t, e.reg, "other", []byte("shared"))
	if _, err := e.reg.PutManifest(ctx, "app", oci.Reference{Tag: "v1"}, "", imageManifest(cfg, layer, 6, 5), nil); err != nil {
		t.Fatal(err)
	}
	u, err := e.reg.StartUpload(ctx, "app", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.WriteChunk(ctx, "app", u.ID, Chunk{Start: -1, Length: -1, Body: bytes.NewReader([]byte("part"))}); err != nil {
		t.Fatal(err)
	}

	// Within the grace period nothing is collected.
	e.clock.Advance(time.Hour)
	st, err := e.reg.CollectGarbage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st != (GCStats{}) {
		t.Fatalf("collected within the grace period: %+v", st)
	}

	// Past it, blobs no manifest references lose their links (orphan in
	// app, shared in other; shared was deleted from app) and, linked
	// nowhere, their objects; the image's blobs stay.
	e.clock.Advance(48 * time.Hour)
	if err := e.reg.DeleteBlob(ctx, "app", shared); err != nil {
		t.Fatal(err)
	}
	st, err = e.reg.CollectGarbage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.UnlinkedBlobs != 2 || st.DeletedBlobs != 2 || st.PurgedUploads != 1 {
		t.Fatalf("stats %+v, want 2 unlinked, 2 deleted, 1 upload purged", st)
	}
	for d, want := range map[digest.Digest]bool{cfg: true, layer: true, orphan: false, shared: false} {
		if got := e.objectExists(t, d); got != want {
			t.Errorf("object %s exists=%v, want %v", d, got, want)
		}
	}
	if _, err := e.reg.UploadStatus(ctx, "app", u.ID); !errors.Is(err, ErrUploadUnknown) {
		t.Errorf("stale upload still there: %v", err)
	}
	if e.partsStored(t, u.ID) {
		t.Errorf("stale upload left parts")
	}

	// A blob still linked in a repository is never deleted, even if
	// unlinked from another.
	kept := put(t, e.reg, "app", []byte("kept"))
	put(t, e.reg, "keeper", []byte("kept"))
	if _, err := e.reg.PutManifest(ctx, "keeper", oci.Reference{Tag: "k"}, "", imageManifest(kept, kept, 4, 4), nil); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.DeleteBlob(ctx, "app", kept); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(48 * time.Hour)
	if _, err := e.reg.CollectGarbage(ctx); err != nil {
		t.Fatal(err)
	}
	if !e.objectExists(t, kept) {
		t.Fatal("blob referenced in another repository was collected")
	}

	// Deleting the image's tag leaves the manifest, and so its blobs.
	if err := e.reg.DeleteManifest(ctx, "app", oci.Reference{Tag: "v1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.GetManifest(ctx, "app", oci.Reference{Tag: "v1"}, false); !errors.Is(err, ErrManifestUnknown) {
		t.Fatal(err)
	}
	e.clock.Advance(48 * time.Hour)
	if _, err := e.reg.CollectGarbage(ctx); err != nil {
		t.Fatal(err)
	}
	if !e.objectExists(t, cfg) {
		t.Fatal("blob of an untagged but present manifest was collected")
	}
}

func TestGCWaitsForNothingWhenMarkIsStale(t *testing.T) {
	// A collector that died after marking a blob must not block pushes of
	// it forever: once the mark is stale, the pusher finishes the
	// collection and stores the blob afresh.
	e := newEnv(t)
	ctx := context.Background()
	d := put(t, e.reg, "app", []byte("content"))
	if err := e.reg.DeleteBlob(ctx, "app", d); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(48 * time.Hour)
	marked, err := e.meta.MarkBlobsForCollection(ctx, e.clock.Now().Add(-time.Hour), e.clock.Now().Add(-staleMark), 10)
	if err != nil || len(marked) != 1 {
		t.Fatalf("mark: %v %v", marked, err)
	}
	e.clock.Advance(2 * staleMark)
	if _, err := e.reg.PutBlob(ctx, "app", d, bytes.NewReader([]byte("content"))); err != nil {
		t.Fatal(err)
	}
	if size, err := e.reg.StatBlob(ctx, "app", d); err != nil || size != 7 {
		t.Fatalf("stat after re-push: %d %v", size, err)
	}
	if !e.objectExists(t, d) {
		t.Fatal("object missing after re-push")
	}
}

func TestConcurrentPushesOfOneBlob(t *testing.T) {
	e := newEnv(t)
	content := bytes.Repeat([]byte("same"), 1<<16)
	d := digest.FromBytes(content)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			repo := fmt.Sprintf("repo%d", i%4)
			if i%2 == 0 {
				_, err := e.reg.PutBlob(context.Background(), repo, d, bytes.NewReader(content))
				errs <- err
				return
			}
			errs <- chunkedPush(e.reg, repo, d, content, 3)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		c, err := e.reg.OpenBlob(context.Background(), fmt.Sprintf("repo%d", i), d)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		if !bytes.Equal(got, content) {
			t.Fatalf("repo%d: content differs", i)
		}
	}
}

func chunkedPush(r *Registry, repo string, d digest.Digest, content []byte, parts int) error {
	ctx := context.Background()
	u, err := r.StartUpload(ctx, repo, "")
	if err != nil {
		return err
	}
	step := len(content)/parts + 1
	for off := 0; off < len(content); off += step {
		end := min(off+step, len(content))
		if _, err := r.WriteChunk(ctx, repo, u.ID, Chunk{Start: int64(off), Length: int64(end - off), Body: bytes.NewReader(content[off:end])}); err != nil {
			return err
		}
	}
	_, err = r.CompleteUpload(ctx, repo, u.ID, d, Chunk{Start: -1, Length: -1, Body: bytes.NewReader(nil)})
	return err
}

func TestConcurrentPushesOfOneTag(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	layer := put(t, e.reg, "app", []byte("layer"))
	var wg sync.WaitGroup
	digests := make(chan digest.Digest, 20)
	for i := range 20 {
		cfgContent := []byte(fmt.Sprintf("config %02d", i))
		cfg := put(t, e.reg, "app", cfgContent)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := e.reg.PutManifest(ctx, "app", oci.Reference{Tag: "latest"}, "", imageManifest(cfg, layer, len(cfgContent), 5), nil)
			if err != nil {
				t.Error(err)
				return
			}
			digests <- res.Digest
		}()
	}
	wg.Wait()
	close(digests)
	pushed := map[digest.Digest]bool{}
	for d := range digests {
		pushed[d] = true
	}
	m, err := e.reg.GetManifest(ctx, "app", oci.Reference{Tag: "latest"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !pushed[m.Digest] || digest.FromBytes(m.Payload) != m.Digest {
		t.Fatalf("tag points at %s, whose payload does not match or was never pushed", m.Digest)
	}
	for d := range pushed {
		if _, err := e.reg.GetManifest(ctx, "app", oci.Reference{Digest: d.String()}, false); err != nil {
			t.Fatalf("manifest %s lost: %v", d, err)
		}
	}
}

func TestUploadResumesAfterRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	content := bytes.Repeat([]byte("0123456789"), 1000)
	d := digest.FromBytes(content)
	u, err := e.reg.StartUpload(ctx, "app", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.WriteChunk(ctx, "app", u.ID, Chunk{Start: 0, Length: 4000, Body: bytes.NewReader(content[:4000])}); err != nil {
		t.Fatal(err)
	}
	e.close()
	e.open(t)
	st, err := e.reg.UploadStatus(ctx, "app", u.ID)
	if err != nil || st.Size != 4000 {
		t.Fatalf("after restart: %+v %v", st, err)
	}
	if _, err := e.reg.WriteChunk(ctx, "app", u.ID, Chunk{Start: 4000, Length: -1, Body: bytes.NewReader(content[4000:9000])}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.CompleteUpload(ctx, "app", u.ID, d, Chunk{Start: 9000, Length: 1000, Body: bytes.NewReader(content[9000:])}); err != nil {
		t.Fatal(err)
	}
	c, err := e.reg.OpenBlob(ctx, "app", d)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, _ := io.ReadAll(c)
	if !bytes.Equal(got, content) {
		t.Fatal("resumed upload content differs")
	}
}

// failingReader returns some bytes, then an error, like a client that
// disconnects mid-chunk.
type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("connection reset")
	}
	k := min(len(p), f.n)
	f.n -= k
	return k, nil
}

func TestBrokenChunkLeavesNothing(t *testing.T) { onEachBackend(t, testBrokenChunkLeavesNothing) }

func testBrokenChunkLeavesNothing(t *testing.T, e *env) {
	ctx := context.Background()
	u, err := e.reg.StartUpload(ctx, "app", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.WriteChunk(ctx, "app", u.ID, Chunk{Start: -1, Length: -1, Body: &failingReader{n: 5000}}); !errors.Is(err, ErrUploadInvalid) {
		t.Fatalf("broken chunk: %v", err)
	}
	st, err := e.reg.UploadStatus(ctx, "app", u.ID)
	if err != nil || st.Size != 0 {
		t.Fatalf("upload advanced on a broken chunk: %+v %v", st, err)
	}
	if e.partsStored(t, u.ID) {
		t.Fatalf("broken chunk left parts")
	}
	// A monolithic push that breaks leaves no blob either.
	d := digest.FromString("whatever")
	if _, err := e.reg.PutBlob(ctx, "app", d, &failingReader{n: 3}); err == nil {
		t.Fatal("broken monolithic push succeeded")
	}
	if e.objectExists(t, d) {
		t.Fatal("broken monolithic push left an object")
	}
}

func TestOrphanedPartsArePurged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// A part whose upload was never recorded, as a crash between writing
	// and recording it leaves.
	if _, err := e.blobs.WritePart(ctx, blobstore.PartKey("lost-upload", 0, "abcd"), bytes.NewReader([]byte("orphan"))); err != nil {
		t.Fatal(err)
	}
	st, err := e.reg.CollectGarbage(ctx)
	if err != nil || st.PurgedUploads != 0 {
		t.Fatalf("fresh orphan purged: %+v %v", st, err)
	}
	old := time.Now().Add(-48 * time.Hour)
	dir := filepath.Join(e.dir, "blobs", "uploads", "lost-upload")
	entries, _ := os.ReadDir(dir)
	for _, en := range entries {
		_ = os.Chtimes(filepath.Join(dir, en.Name()), old, old)
	}
	e.clock.Set(time.Now())
	st, err = e.reg.CollectGarbage(ctx)
	if err != nil || st.PurgedUploads != 1 {
		t.Fatalf("old orphan not purged: %+v %v", st, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("%d orphaned parts left", len(entries))
	}
}
