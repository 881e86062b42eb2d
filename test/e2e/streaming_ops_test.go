package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestStreamingConversionSurvivesKill kills sluiced with SIGKILL while it
// converts a large image, restarts it on the same data directory with a
// short lease, and expects the operation to be resumed and to succeed with
// exactly one streaming artifact, every layer of it whole, no upload part
// recorded by the interrupted attempt left over, and what that attempt
// was writing reclaimed by the purge of stale uploads.
func TestStreamingConversionSurvivesKill(t *testing.T) {
	zstd := requireTool(t, "zstd")
	img := largeImage(t)
	data := t.TempDir()
	// A crashed worker's operation is taken over once its lease runs out.
	env := []string{"SLUICE_STREAMING_LEASE=3s", oneCore}
	reg := startSluiced(t, data, env...)
	oc := newOCIClient(t, reg.addr)
	const repo = "e2e/streaming/crash"
	oc.pushImage(t, repo, "v1", img)

	loc, _ := oc.startConversion(t, repo, "v1")
	op := oc.waitOperation(t, loc, conversionTimeout, "is running with some progress", func(op operation) bool {
		return op.Status == statusRunning && op.percent() > 0
	})
	mount := "/mount/v1/" + repo + "/_manifests/" + img.ManifestDigest.String()
	if _, _, err := oc.do(context.Background(), http.MethodGet, mount, nil, nil, http.StatusConflict); err != nil {
		t.Errorf("the legacy expansion check while the image converts: %v", err)
	}
	reg.kill()
	t.Logf("killed sluiced during %v", op)

	reg = startSluiced(t, data, env...)
	oc = newOCIClient(t, reg.addr)
	start := time.Now()
	op = oc.waitSucceeded(t, loc, 2*time.Minute)
	t.Logf("resumed and finished in %v: %v", time.Since(start).Round(time.Millisecond), op)
	if resumed := reg.logged("operation started", "attempt", 2.0); len(resumed) != 1 {
		t.Errorf("the restarted sluiced logged %d second attempts of the operation, want 1", len(resumed))
	}

	all := oc.referrers(t, repo, img.ManifestDigest, "")
	refs := oc.referrers(t, repo, img.ManifestDigest, artifactTypeStreaming)
	sigs := oc.referrers(t, repo, img.ManifestDigest, artifactTypeStreamingSignature)
	if len(all) != 2 || len(refs) != 1 || len(sigs) != 1 {
		t.Fatalf("after the crash %s has referrers %+v, of which %d streaming and %d signatures, want exactly one of each", img.ManifestDigest, all, len(refs), len(sigs))
	}
	checkStreamingArtifact(t, oc, zstd, repo, refs[0], img.descriptor(), img)
	if _, _, err := oc.do(context.Background(), http.MethodGet, mount, nil, nil, http.StatusOK); err != nil {
		t.Errorf("the legacy expansion check once the image is converted: %v", err)
	}
	if info := oc.repository(t, repo); info.ManifestCount != 3 {
		t.Errorf("%s holds %d manifests, want the image, its streaming artifact and the artifact's signature", repo, info.ManifestCount)
	}
	checkBlobFiles(t, filepath.Join(data, "blobs", "blobs"))

	// The killed attempt was streaming a converted layer into an upload
	// session of its operation's: the new attempt drops it before starting
	// again, so nothing of it is left, not even the temporary file of the
	// part that was being written.
	uploads := filepath.Join(data, "blobs", "uploads")
	if left := uploadFiles(t, uploads); len(left) > 0 {
		t.Errorf("upload files are left after the resumed conversion succeeded: %v", left)
	}
	if err := reg.stop(30 * time.Second); err != nil {
		t.Fatalf("stopping sluiced: %v", err)
	}
	reg = startSluiced(t, data)
	oc = newOCIClient(t, reg.addr)
	oc.waitStreamingReferrers(t, repo, img.ManifestDigest, 1, time.Second)
}

// TestStreamingCancel cancels a large conversion over HTTP while it runs
// and expects it to stop within seconds, taking back everything it wrote:
// no streaming referrer, the repository's size as before, no upload left.
// Converting the image again afterwards works.
func TestStreamingCancel(t *testing.T) {
	img := largeImage(t)
	data := t.TempDir()
	reg := startSluiced(t, data, oneCore)
	oc := newOCIClient(t, reg.addr)
	ctx := context.Background()
	const repo = "e2e/streaming/cancel"
	oc.pushImage(t, repo, "v1", img)
	before := oc.repository(t, repo)

	loc, _ := oc.startConversion(t, repo, "v1")
	op := oc.waitOperation(t, loc, conversionTimeout, "is running with some progress", func(op operation) bool {
		return op.Status == statusRunning && op.percent() > 0
	})
	var found operation
	if _, err := oc.mgmt(ctx, http.MethodGet, "/acr/v1/"+repo+"/_streaming/v1", nil, http.StatusOK, &found); err != nil || found.ID != op.ID {
		t.Errorf("the running conversion of %s:v1 is %v (%v), want %s", repo, found, err, op.ID)
	}
	start := time.Now()
	var canceled operation
	if _, err := oc.mgmt(ctx, http.MethodPost, loc+":cancel", nil, http.StatusOK, &canceled); err != nil {
		t.Fatal(err)
	}
	if canceled.Status != statusCanceled || canceled.ID != op.ID {
		t.Errorf("cancel of %s answered %v, want it Canceled", loc, canceled)
	}
	// The worker stops and takes back what it wrote within seconds.
	waitFor(t, 10*time.Second, "the worker reports the canceled conversion cleaned up", func() bool {
		return len(reg.logged("operation canceled; what it wrote was removed")) > 0
	})
	t.Logf("canceled at %s; stopped and cleaned up in %v", op.Progress, time.Since(start).Round(time.Millisecond))
	if op, err := oc.getOperation(ctx, loc); err != nil || op.Status != statusCanceled {
		t.Errorf("after the worker stopped, operation %s is %v (%v), want Canceled", loc, op, err)
	}
	if _, err := oc.mgmt(ctx, http.MethodGet, "/acr/v1/"+repo+"/_streaming/v1", nil, http.StatusNotFound, nil); err != nil {
		t.Errorf("after the cancel, %s:v1 still has a conversion: %v", repo, err)
	}
	if refs := oc.referrers(t, repo, img.ManifestDigest, ""); len(refs) != 0 {
		t.Errorf("the canceled conversion left referrers %+v", refs)
	}
	after := oc.repository(t, repo)
	if after.Size != before.Size || after.ManifestCount != before.ManifestCount {
		t.Errorf("%s holds %d manifests in %d bytes after the cancel, %d in %d before", repo, after.ManifestCount, after.Size, before.ManifestCount, before.Size)
	}
	checkNoUploadsLeft(t, data)

	loc2, _ := oc.startConversion(t, repo, "v1")
	if loc2 == loc {
		t.Fatalf("converting again after a cancel returned the canceled operation %s", loc)
	}
	oc.waitSucceeded(t, loc2, 2*time.Minute)
	oc.waitStreamingReferrers(t, repo, img.ManifestDigest, 1, time.Second)
}

// oneCore keeps sluiced's converter to one compressor, so that the large
// image takes seconds to convert on a machine with many cores too: the
// tests must catch the conversion running, which they learn from its
// progress, reported once a second.
const oneCore = "GOMAXPROCS=1"

// largeImage is an image of three layers of 64 MiB, each of some 8,000
// files of 512 bytes to 16 KiB, which takes a few seconds to convert: small
// files cost the converter more per byte than large ones, as in real
// layers. It is made once and shared by the tests that need one.
func largeImage(t *testing.T) *testImage {
	t.Helper()
	gzip := requireTool(t, "gzip")
	large.once.Do(func() {
		start := time.Now()
		rng := rand.New(rand.NewPCG(1, 2))
		tarballs := make([][]byte, 3)
		for i := range tarballs {
			tarballs[i] = smallFilesLayer(t, rng, fmt.Sprintf("data%d", i), 64<<20)
		}
		large.img = newImage(t, ocispec.Platform{OS: "linux", Architecture: "amd64"}, ocispec.ImageConfig{Cmd: []string{"/bin/true"}}, gzipCommand(gzip), tarballs...)
		var size int64
		for _, l := range large.img.Layers {
			size += l.Size
		}
		t.Logf("made a %d-layer image of %d MiB (%d MB compressed) in %v", len(tarballs), 3*64, size/1e6, time.Since(start).Round(time.Millisecond))
	})
	if large.img == nil {
		t.Fatal("making the large test image failed in an earlier test")
	}
	return large.img
}

// smallFilesLayer is a tarball of a directory of files of 512 bytes to
// 16 KiB of compressible bytes, size bytes in all.
func smallFilesLayer(t *testing.T, rng *rand.Rand, dir string, size int) []byte {
	t.Helper()
	data := compressibleBytes(rng, size)
	entries := []tarEntry{dirEntry(dir)}
	for i := 0; len(data) > 0; i++ {
		n := min(len(data), 512+rng.IntN(16<<10-512))
		entries = append(entries, fileEntry(fmt.Sprintf("%s/f%05d", dir, i), 0o644, data[:n]))
		data = data[n:]
	}
	return tarLayer(t, entries...)
}

var large struct {
	once sync.Once
	img  *testImage
}

// checkNoUploadsLeft checks that the blob store holds no upload parts, nor
// the temporary file of one being written.
func checkNoUploadsLeft(t *testing.T, data string) {
	t.Helper()
	if left := uploadFiles(t, filepath.Join(data, "blobs", "uploads")); len(left) > 0 {
		t.Errorf("%d upload files are left: %v", len(left), left)
	}
}

// logged returns the log entries of message msg that have the given key
// and value pairs (values as encoding/json decodes them).
func (s *sluiced) logged(msg string, kv ...any) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
next:
	for _, line := range s.lines {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil || e["msg"] != msg {
			continue
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if e[kv[i].(string)] != kv[i+1] {
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}
