package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/nodestatus"
)

func TestNodeStatus(t *testing.T) {
	root := t.TempDir()
	l := nodestatus.Open(nodestatus.Path(root))
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, o := range []nodestatus.Outcome{
		{Image: "reg/team/b:1", Layer: "sha256:b1", State: nodestatus.Downloaded, Reason: "unauthorized", Detail: "401", At: at},
		{Image: "reg/team/a:1", Layer: "sha256:a1", State: nodestatus.Streamed, MountSeconds: 0.4125, At: at},
		{Image: "reg/team/a:1", Layer: "sha256:a2", State: nodestatus.Downloaded, Reason: "no_artifact", At: at},
		// A later pull of the same layer replaces what the first said.
		{Image: "reg/team/a:1", Layer: "sha256:a2", State: nodestatus.Streamed, MountSeconds: 0.0008, At: at},
	} {
		if err := l.Record(o); err != nil {
			t.Fatal(err)
		}
	}
	// The first container on reg/team/a:1 found 1,500,000 bytes of a1 and
	// 250,000 of a2 fetched.
	for layer, n := range map[string]int64{"sha256:a1": 1_500_000, "sha256:a2": 250_000} {
		if ok, err := l.NoteStart("reg/team/a:1", layer, n); !ok || err != nil {
			t.Fatalf("NoteStart(%s) = %v, %v", layer, ok, err)
		}
	}
	run := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: isolatedEnv(t)}
		if code := Execute(t.Context(), a, NewRootCommand(a, NewNodeCommand), args); code != 0 {
			t.Fatalf("sluice %s exited %d: %s", strings.Join(args, " "), code, errOut.String())
		}
		return out.String()
	}
	var got []nodeImageStatus
	if err := json.Unmarshal([]byte(run("node", "status", "--root", root)), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Image != "reg/team/a:1" || got[0].Streamed != 2 || got[0].Downloaded != 0 ||
		got[1].Image != "reg/team/b:1" || got[1].Downloaded != 1 || got[1].Layers[0].Reason != "unauthorized" || got[1].Layers[0].At != "2026-01-02T03:04:05Z" {
		t.Errorf("node status: %+v", got)
	}
	if a := got[0]; a.FetchedBeforeStart == nil || *a.FetchedBeforeStart != 1_750_000 || a.Layers[0].MountSeconds != 0.4125 ||
		a.Layers[1].FetchedBeforeStart == nil || *a.Layers[1].FetchedBeforeStart != 250_000 {
		t.Errorf("node status of reg/team/a:1: %+v", a)
	}
	if b := got[1]; b.FetchedBeforeStart != nil || b.Layers[0].FetchedBeforeStart != nil || b.Layers[0].MountSeconds != 0 {
		t.Errorf("node status of the downloaded reg/team/b:1 has streaming figures: %+v", b)
	}
	table := run("node", "status", "--root", root, "-o", "table")
	t.Logf("sluice node status -o table:\n%s", table)
	for _, want := range []string{"reg/team/a:1", "2 streamed, 0 downloaded", "sha256:b1", "unauthorized",
		"Mount", "Fetched before start", "413ms", "800µs", "1.8 MB", "1.5 MB", "250.0 KB"} {
		if !strings.Contains(table, want) {
			t.Errorf("the table lacks %q:\n%s", want, table)
		}
	}
	if tsv := run("node", "status", "--root", root, "--query", "[?downloaded > `0`].image", "-o", "tsv"); tsv != "reg/team/b:1\n" {
		t.Errorf("images with downloaded layers: %q", tsv)
	}
	if empty := run("node", "status", "--root", t.TempDir()); strings.TrimSpace(empty) != "[]" {
		t.Errorf("a node without pulls: %q", empty)
	}
}
