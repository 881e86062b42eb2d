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
	"slices"
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
	// MountSeconds is how long a streamed layer took to mount: from the
	// snapshotter's request to the FUSE manager to the mount being ready.
	MountSeconds float64 `json:"mountSeconds,omitempty"`
	// FetchedBeforeStart is how many bytes of a streamed layer had been
	// fetched from the registry when containerd prepared the first
	// container's root file system on it after the pull; nil until then.
	FetchedBeforeStart *int64 `json:"fetchedBeforeStartBytes,omitempty"`
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
	return l.write()
}

// WantsStart reports whether the record knows the layer of image as
// streamed and waits for the bytes fetched before its first container.
func (l *Log) WantsStart(image, layer string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.IndexFunc(l.out, func(o Outcome) bool { return o.Image == image && o.Layer == layer })
	return i >= 0 && l.out[i].State == Streamed && l.out[i].FetchedBeforeStart == nil
}

// NoteStart records, for the streamed layer of image, the bytes fetched
// before its first container started, unless the pull that recorded the
// layer has it already. It reports whether it recorded it: false for a
// layer the record does not know as streamed, or whose first container
// was noted before.
func (l *Log) NoteStart(image, layer string, fetched int64) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.IndexFunc(l.out, func(o Outcome) bool { return o.Image == image && o.Layer == layer })
	if i < 0 || l.out[i].State != Streamed || l.out[i].FetchedBeforeStart != nil {
		return false, nil
	}
	l.out[i].FetchedBeforeStart = &fetched
	return true, l.write()
}

func (l *Log) write() error {
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
