package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
)

// userConfig is the user's configuration file: defaults (az's section of
// the same name) and the registries logged in to.
type userConfig struct {
	Defaults   map[string]string `yaml:"defaults,omitempty"`
	Core       map[string]string `yaml:"core,omitempty"`
	Registries []registryEntry   `yaml:"registries,omitempty"`

	path string
}

// registryEntry is a registry configured with sluice login.
type registryEntry struct {
	Name string `yaml:"name"`
	// URL is http://host[:port] or https://host[:port]; the scheme decides
	// plain HTTP or TLS.
	URL      string `yaml:"url"`
	Username string `yaml:"username,omitempty"`
	Password string `yaml:"password,omitempty"`
	// CredentialStore is "docker" when the credentials are kept in the
	// docker credential store rather than here.
	CredentialStore string `yaml:"credentialStore,omitempty"`
}

// Host is the registry's host[:port].
func (e *registryEntry) Host() string {
	u, err := url.Parse(e.URL)
	if err != nil {
		return ""
	}
	return u.Host
}

// configKeys are the keys config set accepts.
var configKeys = []string{"defaults.acr", "defaults.registry", "core.output"}

// configPath is $SLUICE_CONFIG, else $XDG_CONFIG_HOME/sluice/config.yaml,
// else ~/.config/sluice/config.yaml.
func (a *App) configPath() (string, error) {
	if p := a.getenv("SLUICE_CONFIG"); p != "" {
		return p, nil
	}
	if x := a.getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "sluice", "config.yaml"), nil
	}
	home := a.getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", fmt.Errorf("cannot find the configuration file: set SLUICE_CONFIG or HOME: %w", err)
		}
	}
	return filepath.Join(home, ".config", "sluice", "config.yaml"), nil
}

// config loads the user's configuration once; a missing file is an empty
// configuration.
func (a *App) config() (*userConfig, error) {
	if a.conf != nil {
		return a.conf, nil
	}
	p, err := a.configPath()
	if err != nil {
		return nil, err
	}
	c := &userConfig{path: p}
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("reading the configuration: %w", err)
	default:
		if err := yaml.Unmarshal(b, c); err != nil {
			return nil, fmt.Errorf("the configuration file %s is not valid YAML: %w (fix or remove it)", p, err)
		}
	}
	a.conf = c
	return c, nil
}

// save writes the configuration with mode 0600 (it may hold passwords):
// to a temporary file in the same directory, synced, then renamed over the
// old one, so a crash never leaves half a file.
func (c *userConfig) save() error {
	dir := filepath.Dir(c.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return err
	}
	b := buf.Bytes()
	tmp, err := os.CreateTemp(dir, ".config-*.yaml")
	if err != nil {
		return fmt.Errorf("writing the configuration: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("writing the configuration: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), c.path); err != nil {
		return fmt.Errorf("writing the configuration: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// registry returns the configured registry of that name, or nil.
func (c *userConfig) registry(name string) *registryEntry {
	for i := range c.Registries {
		if c.Registries[i].Name == name {
			return &c.Registries[i]
		}
	}
	return nil
}

// registryByHost returns the configured registry at host[:port], or nil.
func (c *userConfig) registryByHost(host string) *registryEntry {
	for i := range c.Registries {
		if strings.EqualFold(c.Registries[i].Host(), host) {
			return &c.Registries[i]
		}
	}
	return nil
}

// defaultRegistry is defaults.registry, else defaults.acr.
func (c *userConfig) defaultRegistry() string {
	if r := c.Defaults["registry"]; r != "" {
		return r
	}
	return c.Defaults["acr"]
}

// set sets a key ("section.name").
func (c *userConfig) set(key, value string) error {
	if !slices.Contains(configKeys, key) {
		return usageErrorf("unknown configuration key %q; the keys are %s", key, strings.Join(configKeys, ", "))
	}
	if key == "core.output" && value != "" && !slices.Contains(outputFormats, value) {
		return usageErrorf("core.output %q: use one of %s", value, strings.Join(outputFormats, ", "))
	}
	section, name, _ := strings.Cut(key, ".")
	m := c.section(section, true)
	if value == "" {
		delete(m, name)
	} else {
		m[name] = value
	}
	return nil
}

func (c *userConfig) section(name string, create bool) map[string]string {
	p := &c.Defaults
	if name == "core" {
		p = &c.Core
	}
	if *p == nil && create {
		*p = map[string]string{}
	}
	return *p
}

// dockerConfig is the docker client's configuration file, where the docker
// credential store is named.
func (a *App) dockerConfigPath() string {
	if d := a.getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	home := a.getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	return filepath.Join(home, ".docker", "config.json")
}

// dockerHelperConfigured reports whether docker's configuration names a
// credential helper for host (credsStore, or credHelpers[host]).
func (a *App) dockerHelperConfigured(host string) bool {
	b, err := os.ReadFile(a.dockerConfigPath())
	if err != nil {
		return false
	}
	var dc struct {
		CredsStore  string            `json:"credsStore"`
		CredHelpers map[string]string `json:"credHelpers"`
	}
	if json.Unmarshal(b, &dc) != nil {
		return false
	}
	return dc.CredsStore != "" || dc.CredHelpers[host] != ""
}

// dockerStore opens the docker credential store (its helpers, or
// config.json itself when it names none).
func (a *App) dockerStore() (credentials.Store, error) {
	s, err := credentials.NewStore(a.dockerConfigPath(), credentials.StoreOptions{AllowPlaintextPut: true})
	if err != nil {
		return nil, fmt.Errorf("the docker credential store (%s): %w", a.dockerConfigPath(), err)
	}
	return s, nil
}

// dockerCredential looks host up in the docker credential store; empty
// when it has nothing (or cannot be read).
func (a *App) dockerCredential(ctx context.Context, host string) auth.Credential {
	s, err := a.dockerStore()
	if err != nil {
		return auth.EmptyCredential
	}
	cred, err := credentials.Credential(s)(ctx, host)
	if err != nil {
		return auth.EmptyCredential
	}
	return cred
}
