package conversion

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the workers' Prometheus metrics.
type metrics struct {
	ended     *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	leaseLoss prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, store Queue, log *slog.Logger) *metrics {
	m := &metrics{
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_operations_ended_total",
			Help: "Operations this process ran to an end, by kind and outcome (Succeeded, Failed, Canceled, Retried: handed back to the queue).",
		}, []string{"kind", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_operation_duration_seconds",
			Help:    "How long this process ran an operation, by kind and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 14), // 0.25 s to about 68 min
		}, []string{"kind", "outcome"}),
		leaseLoss: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_operation_lease_losses_total",
			Help: "Operations this process stopped because another worker took them over (its lease had run out).",
		}),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.ended, m.duration, m.leaseLoss, &queueCollector{store: store, log: log})
	return m
}

func (m *metrics) observe(kind, outcome string, took time.Duration) {
	m.ended.WithLabelValues(kind, outcome).Inc()
	m.duration.WithLabelValues(kind, outcome).Observe(took.Seconds())
}

// queueCollector reports the queue's depth, read from the store (which
// every process shares) when scraped.
type queueCollector struct {
	store Queue
	log   *slog.Logger
}

var queuedDesc = prometheus.NewDesc("sluice_operations_queued", "Operations waiting for a worker, by kind (the shared queue's depth).", []string{"kind"}, nil)

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- queuedDesc }

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := c.store.QueuedOperations(ctx)
	if err != nil {
		c.log.Warn("queue depth for metrics", "err", err)
		return
	}
	for _, kind := range []string{KindConversion, KindImport} {
		ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(counts[kind]), kind)
	}
}
