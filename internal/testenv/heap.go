package testenv

import (
	"runtime"
	"sync"
	"time"
)

// HeapWatch samples the heap in use every interval until Done, which
// returns its high-water mark: what a test of bounded memory compares with
// its bound.
type HeapWatch struct {
	stop chan struct{}
	wg   sync.WaitGroup
	peak uint64
}

// WatchHeap starts sampling.
func WatchHeap(interval time.Duration) *HeapWatch {
	h := &HeapWatch{stop: make(chan struct{})}
	h.wg.Go(func() {
		var ms runtime.MemStats
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			h.peak = max(h.peak, ms.HeapInuse)
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	})
	return h
}

// Done stops sampling and returns the highest heap in use seen.
func (h *HeapWatch) Done() uint64 {
	close(h.stop)
	h.wg.Wait()
	return h.peak
}
