package fusemanager

import (
	"sync"
	"sync/atomic"
	"time"
)

// Recording a start: which chunks a container read, in the order it first
// read them, from its first read until the reads go quiet (profile.go
// says what the recording is for).

const (
	// profileWindow ends a recording this long after the first read at
	// the latest: later reads are the container running, not starting.
	profileWindow = 30 * time.Second
	// profileQuietMin is the shortest pause in reads that ends a
	// recording (the background delay when it is longer).
	profileQuietMin = 2 * time.Second
)

// recorder records the chunks a start reads, until finish.
type recorder struct {
	finished atomic.Bool // the recording is over
	mu       sync.Mutex
	seen     map[int]struct{}
	order    []int
}

// recording reports whether reads are still being recorded: once it is
// over, a read need not work out its chunks.
func (rc *recorder) recording() bool { return !rc.finished.Load() }

// note records the chunks of a read not seen before, in order.
func (rc *recorder) note(idx []int) {
	if len(idx) == 0 {
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.finished.Load() {
		return
	}
	for _, i := range idx {
		if _, ok := rc.seen[i]; !ok {
			rc.seen[i] = struct{}{}
			rc.order = append(rc.order, i)
		}
	}
}

// finish ends the recording and returns it.
func (rc *recorder) finish() []int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.finished.Store(true)
	return rc.order
}

// record waits for this start to be over (reads quiet for a while, or
// profileWindow after the first) and returns what it read; false when the
// mount ended first or nothing was read.
func (m *Manager) record(lm *mounted) ([]int, bool) {
	select {
	case <-lm.read:
	case <-lm.ctx.Done():
		return nil, false
	}
	quiet := max(m.cfg.BackgroundDelay, profileQuietMin)
	deadline := time.Now().Add(profileWindow)
	for {
		since := time.Since(time.Unix(0, lm.lastDemand.Load()))
		left := time.Until(deadline)
		if since >= quiet || left <= 0 {
			break
		}
		select {
		case <-lm.ctx.Done():
			return nil, false
		case <-time.After(min(quiet-since, left)):
		}
	}
	rec := lm.profile.finish()
	return rec, len(rec) > 0
}
