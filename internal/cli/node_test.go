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
		{Image: "reg/team/a:1", Layer: "sha256:a1", State: nodestatus.Streamed, At: at},
		{Image: "reg/team/a:1", Layer: "sha256:a2", State: nodestatus.Downloaded, Reason: "no_artifact", At: at},
		// A later pull of the same layer replaces what the first said.
		{Image: "reg/team/a:1", Layer: "sha256:a2", State: nodestatus.Streamed, At: at},
	} {
		if err := l.Record(o); err != nil {
			t.Fatal(err)
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
	table := run("node", "status", "--root", root, "-o", "table")
	t.Logf("sluice node status -o table:\n%s", table)
	for _, want := range []string{"reg/team/a:1", "2 streamed, 0 downloaded", "sha256:b1", "unauthorized"} {
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
