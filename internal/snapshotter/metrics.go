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
	unpacked  prometheus.Counter
	// mountSeconds is how long streamed layers took to mount;
	// fetchedBeforeStart how much of each the registry had sent when the
	// first container on it was prepared.
	mountSeconds       prometheus.Histogram
	fetchedBeforeStart prometheus.Histogram
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
		unpacked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_snapshotter_complete_layers_unpacked_total",
			Help: "Streamed layers unpacked from the node's chunk cache once complete, for the containers created after.",
		}),
		mountSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_snapshotter_mount_seconds",
			Help:    "Time to mount a streamed layer a pull prepares: from the request to the FUSE manager to the mount being ready.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		fetchedBeforeStart: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_snapshotter_fetched_before_start_bytes",
			Help:    "Bytes of a streamed layer fetched from the registry when the first container using it after its pull was prepared.",
			Buckets: prometheus.ExponentialBuckets(4096, 4, 12),
		}),
	}
	m.Registry.MustRegister(m.streamed, m.fallbacks, m.replaced, m.unpacked, m.mountSeconds, m.fetchedBeforeStart)
	// Every reason is there from the start, at 0, for rates and alerts.
	for _, r := range FallbackReasons {
		m.fallbacks.WithLabelValues(r)
	}
	return m
}
