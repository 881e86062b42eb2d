package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Two processes' registries gathered together (the node's endpoint) do not
// clash: their runtime metrics carry the process's name.
func TestTwoProcessesGatherTogether(t *testing.T) {
	families, err := prometheus.Gatherers{New("a"), New("b")}.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "go_goroutines" {
			continue
		}
		if len(f.GetMetric()) != 2 {
			t.Fatalf("go_goroutines has %d series, want one per process", len(f.GetMetric()))
		}
		return
	}
	t.Fatal("no go_goroutines")
}
