package fusemanager

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/promreg"
)

// metrics are the manager's Prometheus metrics.
type metrics struct {
	reg            *prometheus.Registry
	fetchedBytes   *prometheus.CounterVec
	verifyFailures prometheus.Counter
	firstRead      prometheus.Histogram
	completed      prometheus.Counter
	bad            prometheus.Counter
	profiles       *prometheus.CounterVec
}

func newMetrics(m *Manager) *metrics {
	reg := promreg.New("fuse-manager")
	mt := &metrics{
		reg: reg,
		fetchedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_snapshotter_fetched_bytes_total",
			Help: "Compressed bytes fetched from registries: on demand (a container read), prefetched (a startup profile) or in the background (completing a layer).",
		}, []string{"kind"}),
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_snapshotter_verification_failures_total",
			Help: "Chunks, TOCs or whole layers whose content did not match their digest.",
		}),
		firstRead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_snapshotter_time_to_first_read_seconds",
			Help:    "Time from mounting a streamed layer to the first read of its content.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		completed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_snapshotter_layers_completed_total",
			Help: "Streamed layers fetched completely in the background with their DiffID verified.",
		}),
		bad: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_snapshotter_layers_bad_total",
			Help: "Streamed layers marked bad after failing verification.",
		}),
		profiles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_snapshotter_startup_profiles_total",
			Help: "Startup profiles: prefetched (a mount fetched a layer's profile at once), recorded (this node gave the registry one), failed (reading or giving one failed).",
		}, []string{"event"}),
	}
	reg.MustRegister(mt.fetchedBytes, mt.verifyFailures, mt.firstRead, mt.completed, mt.bad, mt.profiles)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_snapshotter_layers_mounted", Help: "Streamed layers mounted now.",
	}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return float64(len(m.mounts))
	}))
	for _, c := range []struct {
		name, help string
		value      func() float64
	}{
		{"sluice_snapshotter_chunk_cache_hits_total", "Chunk reads answered by the on-disk cache.", func() float64 { return float64(m.cache.Stats().Hits) }},
		{"sluice_snapshotter_chunk_cache_misses_total", "Chunk reads the on-disk cache could not answer.", func() float64 { return float64(m.cache.Stats().Misses) }},
		{"sluice_snapshotter_chunk_cache_evictions_total", "Chunks evicted to keep the cache within its size.", func() float64 { return float64(m.cache.Stats().Evictions) }},
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help}, c.value))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_snapshotter_chunk_cache_bytes", Help: "Bytes held by the chunk cache.",
	}, func() float64 { return float64(m.cache.Stats().Size) }))
	return mt
}

func (mt *metrics) fetched(k fetchKind, n int64) {
	kind := "on_demand"
	switch k {
	case background:
		kind = "background"
	case prefetch:
		kind = "prefetch"
	}
	mt.fetchedBytes.WithLabelValues(kind).Add(float64(n))
}
