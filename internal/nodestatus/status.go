// Package nodestatus is the record a node keeps of how each layer of the
// images pulled on it is served (streamed, or downloaded and why): the
// snapshotter writes it, `sluice node status` reads it.
package nodestatus

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sluicehq/sluice/internal/atomicfile"
)

// How a layer a pull prepared is served.
const (
	Streamed   = "streamed"
	Downloaded = "downloaded"
)

// Outcome is what became of one layer of one pulled image.
type Outcome struct {
	Image string `json:"image"`
	Layer string `json:"layer"`
	// State is Streamed or Downloaded.
	State string `json:"state"`
	// Reason is why a downloaded layer was not streamed (a fallback
	// reason), Detail what was wrong.
	Reason string    `json:"reason,omitempty"`
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
}

// maxOutcomes bounds the layers the status file remembers (the newest).
const maxOutcomes = 2000

// Log remembers, in a file under the snapshotter's state directory, how
// each layer of the images pulled on the node is served. It survives
// restarts; the newest maxOutcomes layers are kept.
type Log struct {
	path string
	mu   sync.Mutex
	out  []Outcome
}

// Path is the status file of a node whose snapshotter keeps its state in
// root (its --root, /var/lib/sluice-snapshotter by default).
func Path(root string) string { return filepath.Join(root, "status.json") }

// Open returns the log kept at path, with what it holds already.
func Open(path string) *Log {
	l := &Log{path: path}
	l.out, _ = Read(path)
	return l
}

// Record notes a layer's outcome (replacing an earlier one of the same
// image and layer) and writes the file.
func (l *Log) Record(o Outcome) error {
	if o.At.IsZero() {
		o.At = time.Now().UTC()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := l.out[:0]
	for _, e := range l.out {
		if e.Image != o.Image || e.Layer != o.Layer {
			kept = append(kept, e)
		}
	}
	l.out = append(kept, o)
	if len(l.out) > maxOutcomes {
		l.out = append([]Outcome(nil), l.out[len(l.out)-maxOutcomes:]...)
	}
	b, err := json.Marshal(l.out)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(l.path, b, 0o600)
}

// Read reads a status file; none yet is no outcome.
func Read(path string) ([]Outcome, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Outcome
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("status file %s: %w", path, err)
	}
	return out, nil
}
