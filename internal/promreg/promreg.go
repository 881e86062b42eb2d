// Package promreg makes the Prometheus registry of a Sluice process: the
// one place each process's registry is set up, with the Go runtime's and
// the process's own metrics, labelled with the process's name so that the
// node's endpoint serves the snapshotter's and the FUSE manager's side by
// side.
package promreg

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// New returns a registry holding the runtime and process metrics of the
// process named, under the label process="name".
func New(process string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"process": process}, reg).MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}
