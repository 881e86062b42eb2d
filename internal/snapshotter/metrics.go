package snapshotter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/promreg"
)

// Metrics are the snapshotter's own metrics (the FUSE manager has the
// fetch and cache ones).
type Metrics struct {
	Registry  *prometheus.Registry
	streamed  prometheus.Counter
	fallbacks *prometheus.CounterVec
	replaced  prometheus.Counter
}

// NewMetrics registers the snapshotter's metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: promreg.New("sluice-snapshotter"),
		streamed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_snapshotter_layers_streamed_total",
			Help: "Layers prepared as remote snapshots (mounted lazily, not downloaded).",
		}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_snapshotter_fallbacks_total",
			Help: "Layers that could not be streamed and were downloaded by containerd, by reason.",
		}, []string{"reason"}),
		replaced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_snapshotter_bad_layers_replaced_total",
			Help: "Streamed layers found bad and replaced by the downloaded original layer.",
		}),
	}
	m.Registry.MustRegister(m.streamed, m.fallbacks, m.replaced)
	// Every reason is there from the start, at 0, for rates and alerts.
	for _, r := range FallbackReasons {
		m.fallbacks.WithLabelValues(r)
	}
	return m
}
