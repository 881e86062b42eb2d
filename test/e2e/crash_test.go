package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestCrashDuringConcurrentPushes kills sluiced with SIGKILL while 20
// clients push (half monolithic POST + PUT, half chunked PATCHes + PUT),
// restarts it on the same data directory, and holds it to what it
// acknowledged: every manifest answered 201 is readable by tag and digest
// with all its blobs, every blob answered 201 is readable, every upload
// session that had bytes acknowledged resumes from where the registry says
// it stands, every file in the blob directory hashes to its name, and no
// part file outlives its upload, save those of a closing PUT the kill cut
// short, which only the purge of stale uploads may outlive.
func TestCrashDuringConcurrentPushes(t *testing.T) {
	data := t.TempDir()
	// No garbage collection: blobs of unfinished pushes must stay linked.
	env := []string{"SLUICE_GC_INTERVAL=0"}
	reg := startSluiced(t, data, env...)
	oc := newOCIClient(t, reg.addr)
	rng := newRand(t)

	// An upload left half done on purpose, all its chunks acknowledged.
	parked := parkUpload(t, oc, "crash/parked", randomBytes(rng, 300<<10), 3)
	acked := pushUntilKilled(t, reg, oc, rng, 20)

	reg = startSluiced(t, data, env...)
	oc = newOCIClient(t, reg.addr)
	onDisk := checkBlobFiles(t, filepath.Join(data, "blobs", "blobs"))
	fails := &failures{t: t}
	for _, p := range acked.pushes {
		checkAckedPush(fails, oc, p)
	}
	for d, b := range acked.blobs {
		if !onDisk[d] {
			fails.add("acknowledged blob %s of %s has no file in the blob directory", d, b.repo)
		}
		checkBlob(fails, oc, b.repo, d, b.data)
	}
	resumeUpload(fails, oc, parked)
	outcomes := map[string]int{}
	closedAtKill := map[string]bool{}
	for _, u := range acked.open {
		outcome := resumeUpload(fails, oc, u)
		outcomes[outcome]++
		if outcome == closedBeforeKill {
			closedAtKill[uploadID(t, u.loc)] = true
		}
	}
	fails.report()
	t.Logf("uploads open at the kill: %v", outcomes)

	// And the restarted registry takes new pushes.
	oc.pushImage(t, "crash/after", "v1", newTestImage(t, rng, 10<<10))

	t.Run("no orphaned upload parts", func(t *testing.T) {
		checkNoPartsOutlive(t, reg, data, closedAtKill)
	})
}

// checkNoPartsOutlive checks that every upload has been finished without
// leaving a part file behind (a kill between writing a part and recording
// it orphans one), save those of closedAtKill: uploads whose closing PUT
// was carried out but not answered. The kill may have cut that PUT short
// after the upload was forgotten and before its parts were deleted; nothing
// records those parts any more, and the purge of stale uploads must take
// them, which a restart of reg with garbage collection on makes happen.
func checkNoPartsOutlive(t *testing.T, reg *sluiced, data string, closedAtKill map[string]bool) {
	t.Helper()
	uploads := filepath.Join(data, "blobs", "uploads")
	var leaked, cutShort []string
	for _, f := range uploadPartFiles(t, uploads) {
		if id, _, _ := strings.Cut(filepath.ToSlash(f), "/"); closedAtKill[id] {
			cutShort = append(cutShort, f)
		} else {
			leaked = append(leaked, f)
		}
	}
	if len(leaked) > 0 {
		t.Errorf("%d part files outlive their finished uploads: %v", len(leaked), leaked)
	}
	if len(cutShort) == 0 {
		return
	}
	t.Logf("%d part files of uploads closed as the kill came are left to the purge: %v", len(cutShort), cutShort)
	if err := reg.stop(30 * time.Second); err != nil {
		t.Fatalf("stopping sluiced: %v", err)
	}
	startSluiced(t, data, "SLUICE_GC_INTERVAL=50ms", "SLUICE_GC_UPLOAD_TTL=1ms")
	if !poll(30*time.Second, func() bool { return len(uploadPartFiles(t, uploads)) == 0 }) {
		t.Errorf("the purge of stale uploads left part files: %v", uploadPartFiles(t, uploads))
	}
}

// closedBeforeKill is what resumeUpload finds of an upload whose closing
// PUT the registry carried out without answering before it was killed.
const closedBeforeKill = "closed before the kill"

// uploadID is the id of the upload at loc, the last element of its path.
func uploadID(t *testing.T, loc string) string {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatalf("upload location %q: %v", loc, err)
	}
	return path.Base(u.Path)
}

// crashRecord is what the registry had acknowledged when it was killed.
type crashRecord struct {
	pushes []ackedPush
	blobs  map[digest.Digest]ackedBlob
	open   []*openUpload
}

// pushUntilKilled runs n pushers against reg, a quarter each monolithic
// POST + PUT, chunked with the last chunk in the PUT, monolithic again, and
// chunked with an empty PUT, all in repositories shared by several of them.
// Once pushes have been acknowledged for 1.5 s it kills reg with SIGKILL.
func pushUntilKilled(t *testing.T, reg *sluiced, oc *ociClient, rng *rand.Rand, n int) crashRecord {
	t.Helper()
	pushers := make([]*pusher, n)
	for i := range pushers {
		pushers[i] = &pusher{
			oc:             oc,
			rng:            rand.New(rand.NewPCG(rng.Uint64(), uint64(i))),
			repo:           fmt.Sprintf("crash/r%d", i%5),
			name:           fmt.Sprintf("w%02d", i),
			chunks:         []int{1, 3, 1, 4}[i%4],
			lastChunkInPut: i%4 == 1,
		}
	}
	ctx, stopPushing := context.WithCancel(context.Background())
	defer stopPushing()
	var killed atomic.Bool
	var acked atomic.Int64
	var wg sync.WaitGroup
	for _, p := range pushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(ctx, &killed, &acked)
		}()
	}
	allStopped := make(chan struct{})
	go func() { wg.Wait(); close(allStopped) }()

	start := time.Now()
	waitFor(t, 2*time.Minute, "pushes are acknowledged for 1.5 s", func() bool {
		select {
		case <-allStopped:
			return true // every pusher failed; reported below
		default:
		}
		return acked.Load() >= int64(n) && time.Since(start) > 1500*time.Millisecond
	})
	killed.Store(true)
	reg.kill()
	stopPushing()
	<-allStopped

	rec := crashRecord{blobs: map[digest.Digest]ackedBlob{}}
	for _, p := range pushers {
		if p.err != nil {
			t.Errorf("pusher %s failed before the kill: %v", p.name, p.err)
		}
		rec.pushes = append(rec.pushes, p.pushes...)
		maps.Copy(rec.blobs, p.blobs)
		if p.open != nil {
			rec.open = append(rec.open, p.open)
		}
	}
	t.Logf("killed after %v: %d manifests and %d blobs acknowledged, %d uploads open",
		time.Since(start).Round(time.Millisecond), len(rec.pushes), len(rec.blobs), len(rec.open))
	if len(rec.pushes) == 0 || len(rec.open) == 0 {
		t.Fatalf("the kill should come after some pushes and during others: %d acknowledged, %d open", len(rec.pushes), len(rec.open))
	}
	return rec
}

// parkUpload starts an upload and sends all but the last of chunks pieces
// of blob, each acknowledged with 202.
func parkUpload(t *testing.T, oc *ociClient, repo string, blob []byte, chunks int) *openUpload {
	t.Helper()
	ctx := context.Background()
	loc, err := oc.startUpload(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	u := &openUpload{repo: repo, loc: loc, blob: blob}
	for _, part := range splitChunks(blob, chunks)[:chunks-1] {
		if u.loc, err = oc.patchChunk(ctx, u.loc, u.acked, part); err != nil {
			t.Fatal(err)
		}
		u.acked += int64(len(part))
	}
	return u
}

// resumeUpload asks a restarted registry where an upload stands, sends the
// rest of its bytes from there and closes it, then reads the blob back. It
// returns what it found, for the test's log.
func resumeUpload(f *failures, oc *ociClient, u *openUpload) string {
	ctx := context.Background()
	dgst := digest.FromBytes(u.blob)
	off, err := oc.uploadOffset(ctx, u.loc)
	var se *statusError
	if errors.As(err, &se) && se.Got == http.StatusNotFound && u.finishing {
		// The closing PUT was carried out; only its answer was lost.
		checkBlob(f, oc, u.repo, dgst, u.blob)
		return closedBeforeKill
	}
	if err != nil {
		f.add("upload %s with %d bytes acknowledged (closing PUT sent: %v) cannot be resumed after the restart: %v", u.loc, u.acked, u.finishing, err)
		return "failed"
	}
	if off != u.acked && off != u.acked+u.inFlight {
		f.add("upload %s holds %d bytes after the restart; %d were acknowledged and %d more were in flight", u.loc, off, u.acked, u.inFlight)
		return "failed"
	}
	loc := u.loc
	if off < int64(len(u.blob)) {
		if loc, err = oc.patchChunk(ctx, loc, off, u.blob[off:]); err != nil {
			f.add("resuming upload %s at %d: %v", u.loc, off, err)
			return "failed"
		}
	}
	if err := oc.finishUpload(ctx, loc, dgst, nil); err != nil {
		f.add("closing resumed upload %s: %v", u.loc, err)
		return "failed"
	}
	checkBlob(f, oc, u.repo, dgst, u.blob)
	if off > u.acked {
		return "resumed after the unanswered chunk"
	}
	return "resumed at the acknowledged offset"
}

// checkAckedPush reads an acknowledged image back by tag and by digest.
func checkAckedPush(f *failures, oc *ociClient, p ackedPush) {
	ctx := context.Background()
	for _, ref := range []string{p.tag, p.digest.String()} {
		h, body, err := oc.getManifest(ctx, p.repo, ref, ocispec.MediaTypeImageManifest)
		if err != nil {
			f.add("acknowledged manifest %s:%s (%s) lost: %v", p.repo, p.tag, p.digest, err)
			return
		}
		if !bytes.Equal(body, p.manifest) || h.Get("Docker-Content-Digest") != p.digest.String() {
			f.add("manifest %s@%s is served as %s (%d bytes), want the pushed %s", p.repo, ref, h.Get("Docker-Content-Digest"), len(body), p.digest)
		}
	}
	for d, b := range p.blobs {
		checkBlob(f, oc, p.repo, d, b)
	}
}

func checkBlob(f *failures, oc *ociClient, repo string, d digest.Digest, want []byte) {
	got, err := oc.getBlob(context.Background(), repo, d)
	if err != nil {
		f.add("acknowledged blob %s in %s: %v", d, repo, err)
	} else if !bytes.Equal(got, want) {
		f.add("blob %s in %s: served %d bytes, pushed %d", d, repo, len(got), len(want))
	}
}

// checkBlobFiles walks the blob directory (<algorithm>/<2 hex>/<hex>) and
// checks that every blob file hashes to its name. The temporary files a
// kill leaves behind (<hex>.<time>.tmp, never visible as blobs) are only
// counted. It returns the digests found.
func checkBlobFiles(t *testing.T, root string) map[digest.Digest]bool {
	t.Helper()
	found := map[digest.Digest]bool{}
	temporary := 0
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if strings.HasSuffix(e.Name(), ".tmp") {
			temporary++
			return nil
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		d := digest.Digest(parts[0] + ":" + parts[len(parts)-1])
		if len(parts) != 3 || d.Validate() != nil || parts[1] != d.Encoded()[:2] {
			t.Errorf("blob directory holds %s, which is not <algorithm>/<2 hex>/<hex>", rel)
			return nil
		}
		file, err := os.Open(path)
		if err != nil {
			return err
		}
		defer file.Close()
		v := d.Verifier()
		if _, err := io.Copy(v, file); err != nil {
			return err
		}
		if !v.Verified() {
			t.Errorf("blob file %s does not hash to its name", rel)
		}
		found[d] = true
		return nil
	})
	if err != nil {
		t.Fatalf("walk blob directory: %v", err)
	}
	t.Logf("blob directory: %d blobs, %d temporary files left by the kill", len(found), temporary)
	return found
}

// uploadPartFiles lists the upload part files under root (uploads/<id>/
// <n>-<nonce>), leaving out the temporary files of interrupted writes.
func uploadPartFiles(t *testing.T, root string) []string {
	t.Helper()
	return listUploadFiles(t, root, false)
}

// uploadFiles lists every file under root: upload parts and the temporary
// files of parts being written.
func uploadFiles(t *testing.T, root string) []string {
	t.Helper()
	return listUploadFiles(t, root, true)
}

func listUploadFiles(t *testing.T, root string, temporary bool) []string {
	t.Helper()
	var parts []string
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == root {
			return fs.SkipDir
		}
		if err != nil || e.IsDir() || (!temporary && strings.HasSuffix(e.Name(), ".tmp")) {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		parts = append(parts, rel)
		return nil
	})
	if err != nil {
		t.Fatalf("walk upload directory: %v", err)
	}
	return parts
}

// failures reports the first few of many similar errors in full and the
// rest as a count, so that one broken invariant does not flood the log.
type failures struct {
	t *testing.T
	n int
}

func (f *failures) add(format string, args ...any) {
	f.t.Helper()
	f.n++
	if f.n <= 10 {
		f.t.Errorf(format, args...)
	}
}

func (f *failures) report() {
	if f.n > 10 {
		f.t.Errorf("... and %d more failures like these", f.n-10)
	}
}
