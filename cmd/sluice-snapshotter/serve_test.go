package main

import (
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/sluicehq/sluice/internal/fusemanager"
)

// TestManagerGatherer reads the FUSE manager's metrics over its socket, as
// the snapshotter's metrics endpoint does on every scrape.
func TestManagerGatherer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "fm.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write([]byte(`# HELP sluice_snapshotter_layers_mounted Streamed layers mounted now.
# TYPE sluice_snapshotter_layers_mounted gauge
sluice_snapshotter_layers_mounted 3
# HELP sluice_snapshotter_fetched_bytes_total Compressed bytes fetched.
# TYPE sluice_snapshotter_fetched_bytes_total counter
sluice_snapshotter_fetched_bytes_total{kind="on_demand"} 1024
`))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	families, err := managerGatherer{fusemanager.NewClient(sock)}.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case m.GetGauge() != nil:
				got[f.GetName()] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				got[f.GetName()] = m.GetCounter().GetValue()
			}
		}
	}
	if got["sluice_snapshotter_layers_mounted"] != 3 || got["sluice_snapshotter_fetched_bytes_total"] != 1024 {
		t.Errorf("gathered %v from the manager's metrics", got)
	}
}
