//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCRI drives the node as the kubelet does, with crictl: `crictl pull`
// of a streamed image, a pod on the host network (its sandbox image is
// streamed from the registry too), and a container that reads the image's
// files, whose output comes back in the pod's log.
func testCRI(t *testing.T, n *nodeEnv, img, sandbox *nodeImage) {
	crictl := requireTool(t, "crictl")
	cri := func(args ...string) string {
		t.Helper()
		return n.cl.run(crictl, append([]string{"--runtime-endpoint", "unix://" + n.sock, "--image-endpoint", "unix://" + n.sock, "--timeout", "2m"}, args...)...)
	}
	streamed := func() float64 { return n.sn.metrics()["sluice_snapshotter_layers_streamed_total"] }
	fallbacks := func() string { return pickMetrics(n.sn.metrics(), "fallbacks_total") }

	before := streamed()
	ref := img.ref(n.sn.registry)
	cri("pull", "--creds", n.cri.user+":"+n.cri.password, ref)
	if got := streamed() - before; got != float64(len(img.Layers)) {
		t.Errorf("crictl pull streamed %v layers, want all %d (fallbacks: %s)", got, len(img.Layers), fallbacks())
	}
	if images := cri("images", "--digests"); !strings.Contains(images, img.repo) {
		t.Errorf("crictl images does not list %s:\n%s", img.repo, images)
	}

	dir := t.TempDir()
	pod := filepath.Join(dir, "pod.json")
	writeJSON(t, pod, map[string]any{
		"metadata":      map[string]any{"name": "e2e-pod", "namespace": "e2e", "uid": "e2e-pod-" + n.flavor.name, "attempt": 0},
		"log_directory": n.cri.logDir,
		// The host's network: no CNI plugin is needed.
		"linux": map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
	})
	container := filepath.Join(dir, "container.json")
	writeJSON(t, container, map[string]any{
		"metadata": map[string]any{"name": "reader"},
		"image":    map[string]any{"image": ref},
		"command":  []string{"/bin/busybox", "sh", "-c", "busybox echo cri-ok && busybox cat /etc/streamed.txt && busybox sha256sum /data/blob.bin"},
		"log_path": "reader.log",
		"linux":    map[string]any{},
	})

	before = streamed()
	podID := strings.TrimSpace(cri("runp", pod))
	t.Cleanup(func() {
		_, _, _ = n.cl.try(crictl, "--runtime-endpoint", "unix://"+n.sock, "--timeout", "1m", "stopp", podID)
		_, _, _ = n.cl.try(crictl, "--runtime-endpoint", "unix://"+n.sock, "--timeout", "1m", "rmp", "-f", podID)
	})
	if got := streamed() - before; got != float64(len(sandbox.Layers)) {
		t.Errorf("starting the pod streamed %v layers of the sandbox image, want all %d (fallbacks: %s)", got, len(sandbox.Layers), fallbacks())
	}
	id := strings.TrimSpace(cri("create", podID, container, pod))
	cri("start", id)
	var status struct {
		Status struct {
			State    string `json:"state"`
			ExitCode int    `json:"exitCode"`
			Reason   string `json:"reason"`
		} `json:"status"`
	}
	waitFor(t, time.Minute, "the CRI container exits", func() bool {
		if err := json.Unmarshal([]byte(cri("inspect", id)), &status); err != nil {
			t.Fatalf("crictl inspect: %v", err)
		}
		return status.Status.State == "CONTAINER_EXITED"
	})
	logs := criLog(t, filepath.Join(n.cri.logDir, "reader.log"))
	want := fmt.Sprintf("cri-ok\n%s%s  /data/blob.bin\n", streamedText, img.sums["/data/blob.bin"])
	if status.Status.ExitCode != 0 || logs != want {
		t.Errorf("the CRI container exited %d (%s) and logged\n%q\nwant 0 and\n%q", status.Status.ExitCode, status.Status.Reason, logs, want)
	}
	if crictlLogs := cri("logs", id); crictlLogs != want {
		t.Errorf("crictl logs printed %q, want %q", crictlLogs, want)
	}
}

// criLog reads a container log file as CRI writes it (one "<time> <stream>
// <P|F> <text>" line per piece) and returns the text.
func criLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("container log: %v", err)
	}
	var out strings.Builder
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) < 3 {
			continue
		}
		if len(f) == 4 {
			out.WriteString(f[3])
		}
		if f[2] == "F" {
			out.WriteString("\n")
		}
	}
	return out.String()
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, b)
}
