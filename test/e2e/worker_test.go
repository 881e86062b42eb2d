package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testbackend"
)

// TestWorkerTakesQueuedConversions runs a serving replica that only
// queues conversions (streaming.workers 0) and a `sluiced worker` beside
// it on PostgreSQL and S3: a conversion started through the replica waits
// until the worker starts, then the worker runs it to Succeeded. The
// worker serves its probes and metrics on --listen.
func TestWorkerTakesQueuedConversions(t *testing.T) {
	data := t.TempDir()
	backend := append(sharedBackend(testbackend.Postgres(t), testbackend.S3(t)), "SLUICE_STREAMING_LEASE=3s")
	reg := startSluiced(t, data, append(backend, "SLUICE_STREAMING_WORKERS=0")...)
	oc := newOCIClient(t, reg.addr)
	const repo = "e2e/worker"
	oc.pushImage(t, repo, "v1", newTestImage(t, newRand(t), 1<<10, 200<<10))
	loc, _ := oc.startConversion(t, repo, "v1")
	time.Sleep(3 * time.Second)
	if op, err := oc.getOperation(context.Background(), loc); err != nil || op.Status != "NotStarted" {
		t.Fatalf("with no worker the conversion is %v (%v), want NotStarted", op, err)
	}

	worker := startWorker(t, data, backend...)
	oc.waitSucceeded(t, loc, 2*time.Minute)
	get := func(path string) (int, string) {
		resp, err := http.Get(worker.url(path))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready"} {
		if code, body := get(path); code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("worker %s: %d %q, want 200 with %q", path, code, body, want)
		}
	}
	// The outcome is counted just after it is recorded.
	for _, want := range []string{
		`sluice_operations_ended_total{kind="ArtifactStreamingConversion",outcome="Succeeded"} 1`,
		`sluice_operations_queued{kind="ArtifactStreamingConversion"} 0`,
		`sluice_operation_lease_losses_total 0`,
	} {
		waitFor(t, 5*time.Second, "the worker's /metrics has "+want, func() bool {
			code, body := get("/metrics")
			return code == http.StatusOK && strings.Contains(body, want)
		})
	}
}

// TestCancelReachesWorker cancels, through a serving replica, a large
// conversion a `sluiced worker` runs: the worker, which learns of it at its
// next heartbeat (every second) from the shared database, stops and
// takes back what it wrote.
func TestCancelReachesWorker(t *testing.T) {
	img := largeImage(t)
	data := t.TempDir()
	backend := append(sharedBackend(testbackend.Postgres(t), testbackend.S3(t)), oneCore)
	reg := startSluiced(t, data, append(backend, "SLUICE_STREAMING_WORKERS=0")...)
	oc := newOCIClient(t, reg.addr)
	const repo = "e2e/worker/cancel"
	oc.pushImage(t, repo, "v1", img)
	worker := startWorker(t, data, backend...)

	loc, _ := oc.startConversion(t, repo, "v1")
	oc.waitOperation(t, loc, conversionTimeout, "is running with some progress", func(op operation) bool {
		return op.Status == statusRunning && op.percent() > 0
	})
	start := time.Now()
	if _, err := oc.mgmt(context.Background(), http.MethodPost, loc+":cancel", nil, http.StatusOK, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the worker reports the canceled conversion cleaned up", func() bool {
		return len(worker.logged("operation canceled; what it wrote was removed")) > 0
	})
	// The time is reported, not held to: it is a figure, for a machine
	// that may be busy.
	t.Logf("the worker stopped and cleaned up %v after the cancel", time.Since(start).Round(time.Millisecond))
}

// TestWorkerKilledMidConversion kills -9 the `sluiced worker` converting a
// large image (three layers of 64 MiB) on PostgreSQL and S3: a second
// worker takes the operation over once the lease runs out and finishes
// it; the image gets exactly one streaming artifact and one signature, and
// both replicas read the operation Succeeded.
func TestWorkerKilledMidConversion(t *testing.T) {
	img := largeImage(t)
	data := t.TempDir()
	backend := append(sharedBackend(testbackend.Postgres(t), testbackend.S3(t)), oneCore, "SLUICE_STREAMING_LEASE=3s")
	serving := append(backend, "SLUICE_STREAMING_WORKERS=0")
	a := startSluiced(t, data, serving...)
	b := startSluiced(t, data, serving...)
	oc := newOCIClient(t, a.addr)
	const repo = "e2e/worker/killed"
	oc.pushImage(t, repo, "v1", img)
	first := startWorker(t, data, backend...)
	loc, _ := oc.startConversion(t, repo, "v1")
	op := oc.waitOperation(t, loc, conversionTimeout, "is running with some progress", func(op operation) bool {
		return op.Status == statusRunning && op.percent() > 0
	})
	second := startWorker(t, data, backend...)
	first.kill()
	t.Logf("killed the worker during %v", op)
	oc.waitSucceeded(t, loc, 3*time.Minute)
	if resumed := second.logged("operation started", "attempt", 2.0); len(resumed) != 1 {
		t.Errorf("the second worker logged %d second attempts, want 1", len(resumed))
	}
	if refs, sigs := oc.referrers(t, repo, img.ManifestDigest, artifactTypeStreaming), oc.referrers(t, repo, img.ManifestDigest, artifactTypeStreamingSignature); len(refs) != 1 || len(sigs) != 1 {
		t.Fatalf("after the kill the image has %d streaming artifacts and %d signatures, want one of each", len(refs), len(sigs))
	}
	for name, r := range map[string]*sluiced{"a": a, "b": b} {
		if op, err := newOCIClient(t, r.addr).getOperation(context.Background(), loc); err != nil || op.Status != "Succeeded" {
			t.Errorf("replica %s reads the operation as %v (%v)", name, op, err)
		}
	}
}

// startWorker runs `sluiced worker` on data with the SLUICE_* settings in
// env, serving its probes on a port the kernel chose, and returns once
// its /healthz answers.
func startWorker(t *testing.T, data string, env ...string) *sluiced {
	t.Helper()
	cmd := exec.Command(sluicedBin, "worker", "--listen", "127.0.0.1:0", "--data", data)
	cmd.SysProcAttr = dieWithTest()
	cmd.Env = append(append(os.Environ(), "SLUICE_LOG_FORMAT=json"), env...)
	return runSluiced(t, cmd)
}
