package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/internal/atomicfile"
	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/trust"
)

// Trust decides whose signatures make a streaming artifact mountable, per
// registry (RegistryConfig.Trust):
//
//   - registry: the keys the registry publishes at /acr/v1/_keys, pinned
//     in the node's state the first time the node streams from it. Later,
//     a published key is trusted only if it is pinned or endorsed (by a
//     rotation) by a key that is; a key set replaced wholesale is refused
//     until `sluice-snapshotter trust HOST` pins it again.
//   - keys: only the configured public keys (a CI signer's, say).
//   - none: nothing streams.
//   - any: no signature is needed.
type Trust struct {
	dir    string
	policy func(host string) (mode string, keyFiles []string)
	log    *slog.Logger

	mu        sync.Mutex
	published map[string]publishedKeys
	// pinMu serialises pinning; pins are the pins as last read or
	// written, by registry, with the stamp of their file.
	pinMu sync.Mutex
	pins  map[string]pinned
}

// pinned is a registry's pins in memory.
type pinned struct {
	keys  trust.JWKS
	stamp fileStamp
}

// publishedKeys is a registry's key set as last fetched.
type publishedKeys struct {
	at   time.Time
	keys trust.JWKS
}

// publishedTTL is how long a fetched key set is used before it is fetched
// again; a signature by a key not in it fetches it again at once.
const publishedTTL = 5 * time.Minute

// NewTrust keeps its pins under dir; policy gives a registry's trust mode
// as the configuration says now.
func NewTrust(dir string, policy func(host string) (string, []string), log *slog.Logger) *Trust {
	return &Trust{dir: dir, policy: policy, log: log, published: map[string]publishedKeys{}, pins: map[string]pinned{}}
}

// TrustDir is where a node root keeps its pinned registry keys.
func TrustDir(root string) string { return filepath.Join(root, "trust") }

// errUntrusted is a fallback reason: nothing this node trusts signed the
// artifact (or the registry's trust is "none").
func untrusted(format string, args ...any) error {
	return notStreamed(ReasonUntrusted, format, args...)
}

// Keys returns the keys this node trusts for c's registry now, or nil
// under trust: any. fresh fetches the registry's key set even if the one
// held is recent (a signature names a key it does not have).
func (t *Trust) Keys(ctx context.Context, c *client.Client, fresh bool) (trust.KeySet, error) {
	mode, files := t.policy(c.Host)
	switch mode {
	case TrustAny:
		return nil, nil
	case TrustNone:
		return nil, untrusted("streaming from %s is turned off (trust: none)", c.Host)
	case TrustKeys:
		ks := trust.KeySet{}
		for _, f := range files {
			keys, err := trust.ReadPublicKeys(f)
			if err != nil {
				return nil, untrusted("trusted keys of %s: %v", c.Host, err)
			}
			for kid, k := range keys {
				ks[kid] = k
			}
		}
		return ks, nil
	}
	published, err := t.publishedKeys(ctx, c, fresh)
	if err != nil {
		return nil, notStreamed(ReasonRegistry, "reading the signing keys %s publishes: %v", c.Host, err)
	}
	if len(published.Keys) == 0 {
		return nil, untrusted("%s publishes no signing keys (/acr/v1/_keys), so none of its streaming artifacts can be verified; "+
			"trust a converter's keys with trust: keys, or (unsafe) trust: any, in the node's configuration", c.Host)
	}
	return t.pinnedKeys(c.Host, published)
}

// publishedKeys returns a registry's key set, fetched again when old.
func (t *Trust) publishedKeys(ctx context.Context, c *client.Client, fresh bool) (trust.JWKS, error) {
	t.mu.Lock()
	p, ok := t.published[c.Host]
	t.mu.Unlock()
	if ok && !fresh && time.Since(p.at) < publishedTTL {
		return p.keys, nil
	}
	keys, err := c.SigningKeys(ctx)
	if err != nil {
		return trust.JWKS{}, err
	}
	t.mu.Lock()
	t.published[c.Host] = publishedKeys{at: time.Now(), keys: keys}
	t.mu.Unlock()
	return keys, nil
}

// pinnedKeys returns the published keys the registry's pins vouch for,
// pinning the set on first use and keys endorsed by a rotation as they
// appear. Pins are written to the node's state as they are made and kept
// in memory; a pin file changed by `sluice-snapshotter trust` is read
// again.
func (t *Trust) pinnedKeys(host string, published trust.JWKS) (trust.KeySet, error) {
	t.pinMu.Lock()
	defer t.pinMu.Unlock()
	pins, found, err := t.currentPins(host)
	if err != nil {
		return nil, untrusted("pinned keys of %s: %v", host, err)
	}
	if !found {
		t.savePins(host, published)
		ks, _ := published.KeySet()
		t.log.Info("pinned the signing keys of a registry at first use", "registry", host, "keys", ks.IDs())
		return ks, nil
	}
	pinnedSet, _ := pins.KeySet()
	trusted := trust.Extend(pinnedSet, published)
	var added []trust.JWK
	for _, k := range published.Keys {
		if _, ok := trusted[k.Kid]; ok && pinnedSet[k.Kid] == nil {
			added = append(added, k)
		}
	}
	if len(added) > 0 {
		t.savePins(host, trust.JWKS{Keys: append(append([]trust.JWK(nil), pins.Keys...), added...)})
		for _, k := range added {
			t.log.Info("a registry rotated its signing key; the new key, endorsed by a pinned one, is pinned", "registry", host, "key", k.Kid)
		}
	}
	if len(trusted) == 0 {
		return nil, untrusted("none of the signing keys %s publishes (%s) is pinned on this node or endorsed by a pinned key (%s): "+
			"its key set was replaced. If that was intended, run `sluice-snapshotter trust %s`",
			host, strings.Join(published.IDs(), ", "), strings.Join(pinnedSet.IDs(), ", "), host)
	}
	return trusted, nil
}

// currentPins returns a registry's pins: from memory, or from its file
// when the file changed (or was never read). t.pinMu is held.
func (t *Trust) currentPins(host string) (trust.JWKS, bool, error) {
	st := stamp(pinPath(t.dir, host))
	if p, ok := t.pins[host]; ok && p.stamp == st {
		return p.keys, len(p.keys.Keys) > 0, nil
	}
	keys, err := ReadPins(t.dir, host)
	if errors.Is(err, os.ErrNotExist) {
		delete(t.pins, host)
		return trust.JWKS{}, false, nil
	}
	if err != nil {
		return trust.JWKS{}, false, err
	}
	t.pins[host] = pinned{keys: keys, stamp: st}
	return keys, true, nil
}

// savePins pins a registry's keys: in its file, and in memory with the
// stamp of the file written, so the next lookup takes them from memory and
// does not read the file back. Pinning happens only at a registry's first
// use and at a rotation, so the pull that pins waits for the write. A
// failed write keeps the pins in memory with the stamp of whatever file is
// there, until that file changes or the process ends. t.pinMu is held.
func (t *Trust) savePins(host string, keys trust.JWKS) {
	if err := WritePins(t.dir, host, keys); err != nil {
		t.log.Warn("could not write the pinned keys of a registry; they will be pinned again after a restart", "registry", host, "err", err)
	}
	t.pins[host] = pinned{keys: keys, stamp: stamp(pinPath(t.dir, host))}
}

// pinFile is a registry's pinned keys in the node's state.
type pinFile struct {
	Registry string      `json:"registry"`
	PinnedAt time.Time   `json:"pinnedAt"`
	Keys     []trust.JWK `json:"keys"`
}

func pinPath(dir, host string) string {
	// Host names and ports hold no path separators; a colon is fine.
	return filepath.Join(dir, strings.ReplaceAll(host, "/", "_")+".json")
}

// ReadPins reads the keys pinned for a registry (os.ErrNotExist when
// none are).
func ReadPins(dir, host string) (trust.JWKS, error) {
	b, err := os.ReadFile(pinPath(dir, host))
	if err != nil {
		return trust.JWKS{}, err
	}
	var p pinFile
	if err := json.Unmarshal(b, &p); err != nil {
		return trust.JWKS{}, fmt.Errorf("%s: %w", pinPath(dir, host), err)
	}
	return trust.JWKS{Keys: p.Keys}, nil
}

// ForgetPins removes a registry's pins: the next stream from it pins what
// it publishes then.
func ForgetPins(dir, host string) error {
	if err := os.Remove(pinPath(dir, host)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// WritePins replaces the keys pinned for a registry.
func WritePins(dir, host string, keys trust.JWKS) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(pinFile{Registry: host, PinnedAt: time.Now().UTC(), Keys: keys.Keys}, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(pinPath(dir, host), append(b, '\n'), 0o600)
}
