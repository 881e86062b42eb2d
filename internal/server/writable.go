package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/registry"
)

// How often the stores' writability is probed: in the background while
// serving, and at most this stale when /healthz reports it.
const (
	writableProbeInterval = 30 * time.Second
	writableMaxAge        = 2 * time.Second
)

// writableStore is a store whose writability is watched: its name in the
// gauge and /healthz, where it lives (for the log), and its probe.
type writableStore struct {
	name  string
	where string
	probe func(context.Context) error
}

// writability knows whether each store takes writes, from a probe that
// writes a little and removes it. A store that does not (a full disk)
// refuses pushes with 507 while pulls go on: /healthz stays 200 and says
// which, and sluice_store_writable{store} is 0 for it.
type writability struct {
	stores []writableStore
	log    *slog.Logger
	gauge  *prometheus.GaugeVec

	// probing serialises probes; mu guards the last results.
	probing sync.Mutex
	mu      sync.Mutex
	checked time.Time
	errs    map[string]error
}

func newWritability(reg prometheus.Registerer, log *slog.Logger, stores ...writableStore) *writability {
	w := &writability{stores: stores, log: log, errs: map[string]error{},
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_store_writable",
			Help: "Whether a store takes writes (1) or not (0, a full disk, say: pushes are refused, pulls are served), by store (metadata, blobs).",
		}, []string{"store"})}
	reg.MustRegister(w.gauge)
	return w
}

// probe writes to each store now, records the outcome and logs each change:
// an ERROR line naming the store, its path and the system's cause when a
// store stops taking writes, an INFO line when it takes them again.
func (w *writability) probe(ctx context.Context) {
	w.probing.Lock()
	defer w.probing.Unlock()
	for _, st := range w.stores {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := st.probe(ctx)
		cancel()
		if errors.Is(err, context.Canceled) {
			return
		}
		w.mu.Lock()
		before := w.errs[st.name]
		w.errs[st.name] = err
		w.mu.Unlock()
		switch {
		case err != nil && before == nil:
			w.log.Error("store not writable: pushes are refused, pulls are served", "store", st.name, "path", st.where, "err", err)
		case err == nil && before != nil:
			w.log.Info("store writable again", "store", st.name, "path", st.where)
		}
		v := 1.0
		if err != nil {
			v = 0
		}
		w.gauge.WithLabelValues(st.name).Set(v)
	}
	w.mu.Lock()
	w.checked = time.Now()
	w.mu.Unlock()
}

// run probes every interval until ctx ends.
func (w *writability) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.probe(ctx)
		}
	}
}

// report is what /healthz says of the stores: one line per store that
// does not take writes, with the system's cause (never a server path),
// probed again first when the last probe is older than maxAge.
func (w *writability) report(ctx context.Context, maxAge time.Duration) string {
	w.mu.Lock()
	stale := time.Since(w.checked) > maxAge
	w.mu.Unlock()
	if stale {
		w.probe(ctx)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, st := range w.stores {
		if err := w.errs[st.name]; err != nil {
			fmt.Fprintf(&b, "%s: not writable (%s): pushes are refused until space is freed; pulls are served\n", st.name, writeCause(err))
		}
	}
	return b.String()
}

// writeCause is the system's reason a probe failed, without the file it
// names.
func writeCause(err error) string {
	if _, cause := registry.NoSpace(err); cause != nil {
		return cause.Error()
	}
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "the write did not finish in time"
	}
	return "the write failed; the log has the details"
}
