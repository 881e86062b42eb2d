package snapshotter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/internal/chunkcache"
	"github.com/sluicehq/sluice/internal/streaming"
)

// Config is the node daemon's configuration (YAML, --config).
type Config struct {
	// Root holds snapshots, the FUSE manager's state and the chunk cache.
	Root string `yaml:"root"`
	// Address is the unix socket containerd talks to.
	Address string `yaml:"address"`
	// MetricsAddress, when set, serves Prometheus metrics (host:port).
	MetricsAddress string `yaml:"metricsAddress"`
	// CacheMaxBytes bounds the on-disk chunk cache.
	CacheMaxBytes int64 `yaml:"cacheMaxBytes"`
	// CacheMemoryBytes is how much recently used chunk data the FUSE
	// manager also keeps in memory.
	CacheMemoryBytes int64 `yaml:"cacheMemoryBytes"`
	// BackgroundDelay is how long a layer's reads must be quiet before the
	// rest of it is fetched; "-1s" turns background completion off.
	BackgroundDelay string `yaml:"backgroundDelay"`
	// StartupProfiles (default true) prefetches a layer's startup profile
	// when it is mounted and gives the registry the profile of a start
	// when it has none: later nodes then fetch what a container reads to
	// start at once instead of read by read.
	StartupProfiles *bool `yaml:"startupProfiles"`
	// UnpackComplete (default true) unpacks a streamed layer once the
	// node holds all of it, verified, in place of its FUSE mount: the
	// containers created after that read it from the local disk at
	// overlayfs's speed, and the disk holds it as a download would.
	UnpackComplete *bool `yaml:"unpackComplete"`
	// Registries holds per-registry settings: plain HTTP and the node's
	// credentials (a Sluice token, say). Docker's config.json is consulted
	// after them.
	Registries map[string]RegistryConfig `yaml:"registries"`
	// CRIProxy, when its listen socket is set, serves CRI in front of
	// containerd, for kubelet's --image-service-endpoint: the credentials
	// of each pull are kept for the image's repository and used for its
	// lazy fetches.
	CRIProxy CRIProxyConfig `yaml:"criProxy"`
	// CredentialProviders runs kubelet's credential provider plugins for
	// the repositories they match, after the credentials of CRI pulls
	// and before the registries' own.
	CredentialProviders CredentialProvidersConfig `yaml:"credentialProviders"`
	// Limits bound the TOCs of the streamed layers the node loads: a
	// layer over one is downloaded instead (reason over_limit).
	Limits LimitsConfig `yaml:"limits"`
}

// LimitsConfig bounds what loading a streamed layer's TOC may cost the
// node. The TOC's stored size is checked, from the layer descriptor's
// annotation and from the blob's footer, before it is fetched; its JSON
// size, from the footer, before it is decompressed; its entries once
// decoded. Memory while loading grows with the JSON and the entries, so
// these keys bound it (docs/security.md gives the figures).
type LimitsConfig struct {
	// MaxTOCBytes bounds the TOC as stored (zstd-compressed).
	MaxTOCBytes int64 `yaml:"maxTOCBytes"`
	// MaxTOCJSONBytes bounds the TOC's JSON, once decompressed.
	MaxTOCJSONBytes int64 `yaml:"maxTOCJSONBytes"`
	// MaxEntries bounds the entries (files, directories, links) of a
	// layer.
	MaxEntries int `yaml:"maxEntries"`
}

// Default node limits: the registry's defaults for the stored TOC and the
// entries, and half its JSON limit, which a layer within the entries
// limit never needs (a million entries named as packages name their files
// take about 140 MiB of JSON).
const (
	DefaultMaxTOCBytes     = 64 << 20
	DefaultMaxTOCJSONBytes = 256 << 20
	DefaultMaxEntries      = 1 << 20
)

// Streaming returns the limits as the streaming reader takes them.
func (l LimitsConfig) Streaming() streaming.Limits {
	return streaming.Limits{MaxTOCSize: l.MaxTOCBytes, MaxTOCUncompressedSize: l.MaxTOCJSONBytes, MaxEntries: l.MaxEntries}
}

func (l LimitsConfig) validate() error {
	if l.MaxTOCBytes <= 0 || l.MaxTOCJSONBytes <= 0 || l.MaxEntries <= 0 {
		return fmt.Errorf("limits: maxTOCBytes (%d), maxTOCJSONBytes (%d) and maxEntries (%d) must be positive", l.MaxTOCBytes, l.MaxTOCJSONBytes, l.MaxEntries)
	}
	return nil
}

// CRIProxyConfig places the CRI proxy.
type CRIProxyConfig struct {
	// Listen is the proxy's unix socket (kubelet's image service
	// endpoint); empty turns the proxy off.
	Listen string `yaml:"listen"`
	// Upstream is containerd's socket (DefaultCRIUpstream by default).
	Upstream string `yaml:"upstream"`
	// KeyFile holds the node's key that encrypts the kept credentials
	// (default <root>/credentials/node.key; created on first use).
	KeyFile string `yaml:"keyFile"`
}

// RegistryConfig is one registry's settings.
type RegistryConfig struct {
	// PlainHTTP talks HTTP. Loopback registries default to it.
	PlainHTTP *bool  `yaml:"plainHTTP"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
	// PasswordFile holds the password instead of Password.
	PasswordFile string `yaml:"passwordFile"`
	// Trust says whose streaming artifacts of this registry the node
	// mounts: "registry" (the default: signed by a key the registry
	// publishes, pinned at first use), "keys" (signed by one of
	// TrustKeys), "none" (never stream) or "any" (no signature needed;
	// anyone who may push streaming artifacts decides what runs).
	Trust string `yaml:"trust"`
	// TrustKeys are PEM files of the public keys trusted under "keys".
	TrustKeys []string `yaml:"trustKeys"`
}

// Trust modes of a registry (RegistryConfig.Trust).
const (
	TrustRegistry = "registry"
	TrustKeys     = "keys"
	TrustNone     = "none"
	TrustAny      = "any"
)

// TrustOf returns a registry's trust mode and trusted key files.
func (c *Config) TrustOf(host string) (mode string, keyFiles []string) {
	rc := c.Registries[host]
	if rc.Trust == "" {
		return TrustRegistry, nil
	}
	return rc.Trust, rc.TrustKeys
}

// validateTrust checks every registry's trust settings.
func (c *Config) validateTrust() error {
	for host, rc := range c.Registries {
		switch rc.Trust {
		case "", TrustRegistry, TrustNone, TrustAny:
			if len(rc.TrustKeys) > 0 {
				return fmt.Errorf("registries.%s.trustKeys is used only with trust: keys", host)
			}
		case TrustKeys:
			if len(rc.TrustKeys) == 0 {
				return fmt.Errorf("registries.%s: trust: keys needs trustKeys, the PEM files of the public keys to trust", host)
			}
		default:
			return fmt.Errorf("registries.%s.trust %q: use registry, keys, none or any", host, rc.Trust)
		}
	}
	return nil
}

// Default locations.
const (
	DefaultRoot    = "/var/lib/sluice-snapshotter"
	DefaultAddress = "/run/sluice-snapshotter/sluice.sock"
	// DefaultCRIListen is where `install` points kubelet at.
	DefaultCRIListen   = "/run/sluice-snapshotter/cri.sock"
	DefaultCRIUpstream = "/run/containerd/containerd.sock"
)

// DefaultConfig returns the settings used without a file.
func DefaultConfig() Config {
	return Config{Root: DefaultRoot, Address: DefaultAddress, CacheMaxBytes: 10 << 30, CacheMemoryBytes: chunkcache.DefaultMemoryBytes, BackgroundDelay: "2s",
		Limits: LimitsConfig{MaxTOCBytes: DefaultMaxTOCBytes, MaxTOCJSONBytes: DefaultMaxTOCJSONBytes, MaxEntries: DefaultMaxEntries}}
}

// LoadConfig reads a config file over the defaults; an empty path means
// none.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if _, err := c.Background(); err != nil {
		return c, err
	}
	if err := c.validateTrust(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if err := c.Limits.validate(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if c.CRIProxy.Listen != "" && c.CRIProxy.Upstream == "" {
		c.CRIProxy.Upstream = DefaultCRIUpstream
	}
	return c, nil
}

// Profiles says whether startup profiles are on.
func (c *Config) Profiles() bool { return c.StartupProfiles == nil || *c.StartupProfiles }

// Unpack says whether complete streamed layers are unpacked.
func (c *Config) Unpack() bool { return c.UnpackComplete == nil || *c.UnpackComplete }

// Background parses BackgroundDelay.
func (c *Config) Background() (time.Duration, error) {
	if c.BackgroundDelay == "" {
		return 2 * time.Second, nil
	}
	d, err := time.ParseDuration(c.BackgroundDelay)
	if err != nil {
		return 0, fmt.Errorf("backgroundDelay %q: %w", c.BackgroundDelay, err)
	}
	return d, nil
}

// PlainHTTP says whether a registry talks HTTP: as configured, else only
// loopback registries.
func (c *Config) PlainHTTP(host string) bool {
	if rc, ok := c.Registries[host]; ok && rc.PlainHTTP != nil {
		return *rc.PlainHTTP
	}
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
