package snapshotter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/sluicehq/sluice/internal/chunkcache"
	"github.com/sluicehq/sluice/internal/client"
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
	// Registries holds per-registry settings: plain HTTP and the node's
	// credentials (a Sluice token, say). Docker's config.json is consulted
	// after them.
	Registries map[string]RegistryConfig `yaml:"registries"`
}

// RegistryConfig is one registry's settings.
type RegistryConfig struct {
	// PlainHTTP talks HTTP. Loopback registries default to it.
	PlainHTTP *bool  `yaml:"plainHTTP"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
	// PasswordFile holds the password instead of Password.
	PasswordFile string `yaml:"passwordFile"`
}

// Default locations.
const (
	DefaultRoot    = "/var/lib/sluice-snapshotter"
	DefaultAddress = "/run/sluice-snapshotter/sluice.sock"
)

// DefaultConfig returns the settings used without a file.
func DefaultConfig() Config {
	return Config{Root: DefaultRoot, Address: DefaultAddress, CacheMaxBytes: 10 << 30, CacheMemoryBytes: chunkcache.DefaultMemoryBytes, BackgroundDelay: "2s"}
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
	return c, nil
}

// Profiles says whether startup profiles are on.
func (c *Config) Profiles() bool { return c.StartupProfiles == nil || *c.StartupProfiles }

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

// Credential returns the node's credentials: the configured ones first,
// then docker's config.json and its helpers.
func (c *Config) Credential() auth.CredentialFunc {
	return c.credential(client.DockerCredentials())
}

// ReloadingCredential returns the node's credentials as the config file at
// path (may be "") and docker's config.json say when asked: a file that
// changed is read again, so a rotated token password reaches the next
// fetch without a restart (the FUSE manager, which outlives the
// snapshotter so as not to break running containers, included). A config
// file that no longer parses keeps the last good settings.
func ReloadingCredential(path string, initial Config, log *slog.Logger) auth.CredentialFunc {
	r := &reloader{path: path, cfg: initial, log: log}
	r.cfgStamp = stamp(path)
	r.dockerStamp = stamp(dockerConfigPath())
	r.cred = initial.Credential()
	return r.credential
}

type reloader struct {
	path string
	log  *slog.Logger

	mu          sync.Mutex
	cfg         Config
	cfgStamp    fileStamp
	dockerStamp fileStamp
	cred        auth.CredentialFunc
}

// fileStamp tells a changed file: its modification time and size.
type fileStamp struct {
	mod  time.Time
	size int64
	ok   bool
}

func stamp(path string) fileStamp {
	if path == "" {
		return fileStamp{}
	}
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{st.ModTime(), st.Size(), true}
}

// dockerConfigPath is where docker's config.json is looked for.
func dockerConfigPath() string {
	dir := os.Getenv("DOCKER_CONFIG")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(home, ".docker")
	}
	return filepath.Join(dir, "config.json")
}

func (r *reloader) credential(ctx context.Context, host string) (auth.Credential, error) {
	r.mu.Lock()
	cfgNow, dockerNow := stamp(r.path), stamp(dockerConfigPath())
	if cfgNow != r.cfgStamp || dockerNow != r.dockerStamp {
		if cfgNow != r.cfgStamp && r.path != "" {
			if c, err := LoadConfig(r.path); err != nil {
				r.log.Warn("the config file changed but does not load; keeping the credentials it had", "config", r.path, "err", err)
			} else {
				r.cfg = c
				r.log.Info("config file changed: registry credentials reloaded", "config", r.path)
			}
		}
		r.cfgStamp, r.dockerStamp = cfgNow, dockerNow
		r.cred = r.cfg.Credential()
	}
	cred := r.cred
	r.mu.Unlock()
	return cred(ctx, host)
}

func (c *Config) credential(docker auth.CredentialFunc) auth.CredentialFunc {
	return func(ctx context.Context, host string) (auth.Credential, error) {
		if rc, ok := c.Registries[host]; ok && rc.Username != "" {
			pass := rc.Password
			if rc.PasswordFile != "" {
				b, err := os.ReadFile(rc.PasswordFile)
				if err != nil {
					return auth.EmptyCredential, fmt.Errorf("password file of %s: %w", host, err)
				}
				pass = strings.TrimSpace(string(b))
			}
			return auth.Credential{Username: rc.Username, Password: pass}, nil
		}
		if docker != nil {
			return docker(ctx, host)
		}
		return auth.EmptyCredential, nil
	}
}
