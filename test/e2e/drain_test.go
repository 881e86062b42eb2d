package e2e

import (
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// TestDrainOnSIGTERM sends SIGTERM to a sluiced with drainDelay while an
// upload's chunk is still arriving: /readyz fails at once, requests are
// still served for the drain delay, the chunk in flight is taken, and the
// process then exits cleanly.
func TestDrainOnSIGTERM(t *testing.T) {
	reg := startSluiced(t, t.TempDir(), "SLUICE_DRAIN_DELAY=2s")
	oc := newOCIClient(t, reg.addr)
	loc, err := oc.startUpload(t.Context(), "e2e/drain")
	if err != nil {
		t.Fatal(err)
	}
	// A chunk sent slowly, over about three seconds.
	pr, pw := io.Pipe()
	go func() {
		chunk := make([]byte, 64<<10)
		for range 30 {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		pw.Close()
	}()
	u, _ := oc.base.Parse(loc)
	req, _ := http.NewRequest(http.MethodPatch, u.String(), pr)
	req.Header.Set("Content-Type", "application/octet-stream")
	answer := make(chan error, 1)
	go func() {
		resp, err := oc.hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				err = &statusError{Method: "PATCH", URL: u.String(), Want: http.StatusAccepted, Got: resp.StatusCode}
			}
		}
		answer <- err
	}()
	time.Sleep(500 * time.Millisecond)
	if err := reg.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "/readyz fails once SIGTERM came", func() bool {
		return getStatus(t, reg.url("/readyz")) == http.StatusServiceUnavailable
	})
	if code := getStatus(t, reg.url("/v2/")); code != http.StatusOK {
		t.Errorf("a request during the drain delay: %d, want it served", code)
	}
	if err := <-answer; err != nil {
		t.Errorf("the chunk in flight when SIGTERM came: %v", err)
	}
	select {
	case <-reg.exited:
		if reg.waitErr != nil {
			t.Errorf("sluiced exited with %v after draining", reg.waitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sluiced still runs 30 s after SIGTERM")
	}
}
