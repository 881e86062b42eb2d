package snapshotter

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"
)

// LiveConfig is the node's configuration as its file says when asked: a
// file that changed is read again, so a rotated token password or a trust
// setting reaches the next lookup and fetch without a restart (of the FUSE
// manager too, which outlives the snapshotter so as not to break running
// containers). A config file that no longer parses keeps the last good
// settings. Docker's config.json is watched the same way for credentials.
type LiveConfig struct {
	path string
	log  *slog.Logger

	mu          sync.Mutex
	cfg         Config
	cfgStamp    fileStamp
	dockerStamp fileStamp
	cred        auth.CredentialFunc
}

// NewLiveConfig watches the config file at path (may be "", for none),
// starting from initial.
func NewLiveConfig(path string, initial Config, log *slog.Logger) *LiveConfig {
	l := &LiveConfig{path: path, cfg: initial, log: log}
	l.cfgStamp = stamp(path)
	l.dockerStamp = stamp(dockerConfigPath())
	l.cred = initial.Credential()
	return l
}

// ReloadingCredential returns the node's credentials as the config file at
// path and docker's config.json say when asked (see LiveConfig).
func ReloadingCredential(path string, initial Config, log *slog.Logger) auth.CredentialFunc {
	return NewLiveConfig(path, initial, log).Credential
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

// refresh reads the files again if they changed; l.mu is held.
func (l *LiveConfig) refresh() {
	cfgNow, dockerNow := stamp(l.path), stamp(dockerConfigPath())
	if cfgNow == l.cfgStamp && dockerNow == l.dockerStamp {
		return
	}
	if cfgNow != l.cfgStamp && l.path != "" {
		if c, err := LoadConfig(l.path); err != nil {
			l.log.Warn("the config file changed but does not load; keeping the settings it had", "config", l.path, "err", err)
		} else {
			l.cfg = c
			l.log.Info("config file changed: registry settings reloaded", "config", l.path)
		}
	}
	l.cfgStamp, l.dockerStamp = cfgNow, dockerNow
	l.cred = l.cfg.Credential()
}

// Current returns the configuration as it is now.
func (l *LiveConfig) Current() Config {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refresh()
	return l.cfg
}

// Credential returns a registry's credentials as the files say now.
func (l *LiveConfig) Credential(ctx context.Context, host string) (auth.Credential, error) {
	l.mu.Lock()
	l.refresh()
	cred := l.cred
	l.mu.Unlock()
	return cred(ctx, host)
}
