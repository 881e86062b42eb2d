package snapshotter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"
	"sigs.k8s.io/yaml"
)

// The exec protocol of kubelet's credential provider plugins: a
// CredentialProviderRequest on the plugin's stdin, a
// CredentialProviderResponse on its stdout.
const (
	credentialProviderAPI = "credentialprovider.kubelet.k8s.io/v1"
	providerCallTimeout   = time.Minute
)

// Cache key types a plugin answers with: whom its credentials are for.
const (
	cacheKeyImage    = "Image"
	cacheKeyRegistry = "Registry"
	cacheKeyGlobal   = "Global"
)

// CredentialProvidersConfig names kubelet's credential provider setup, as
// its flags --image-credential-provider-config and
// --image-credential-provider-bin-dir do.
type CredentialProvidersConfig struct {
	// Config is a CredentialProviderConfig file (kubelet.config.k8s.io/v1).
	Config string `yaml:"config"`
	// BinDir holds the plugins' executables, named as the providers.
	BinDir string `yaml:"binDir"`
}

// providerConfigFile is the CredentialProviderConfig kubelet reads.
type providerConfigFile struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Providers  []providerConfig `json:"providers"`
}

type providerConfig struct {
	Name                 string          `json:"name"`
	MatchImages          []string        `json:"matchImages"`
	DefaultCacheDuration *metaDuration   `json:"defaultCacheDuration"`
	APIVersion           string          `json:"apiVersion"`
	Args                 []string        `json:"args"`
	Env                  []providerEnv   `json:"env"`
	TokenAttributes      json.RawMessage `json:"tokenAttributes"`
}

type providerEnv struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// metaDuration is a duration as Kubernetes writes one ("12h", "1m30s").
type metaDuration struct{ time.Duration }

func (d *metaDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

type providerRequest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Image      string `json:"image"`
}

type providerResponse struct {
	APIVersion    string                    `json:"apiVersion"`
	Kind          string                    `json:"kind"`
	CacheKeyType  string                    `json:"cacheKeyType"`
	CacheDuration *metaDuration             `json:"cacheDuration"`
	Auth          map[string]providerAuthKV `json:"auth"`
}

type providerAuthKV struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// CredentialProviders runs kubelet's credential provider plugins for the
// repositories their matchImages cover, and keeps their answers as long
// as each says (cacheKeyType, cacheDuration).
type CredentialProviders struct {
	providers []*credentialProvider
	now       func() time.Time
}

type credentialProvider struct {
	cfg  providerConfig
	path string

	mu    sync.Mutex // one call of the plugin at a time
	cache map[string]cachedAnswer
}

type cachedAnswer struct {
	auth    map[string]providerAuthKV
	expires time.Time
}

// LoadCredentialProviders reads a CredentialProviderConfig; each
// provider's plugin is the executable of its name in binDir.
func LoadCredentialProviders(c CredentialProvidersConfig) (*CredentialProviders, error) {
	if c.Config == "" {
		return nil, nil
	}
	if c.BinDir == "" {
		return nil, errors.New("credentialProviders.binDir is needed with credentialProviders.config")
	}
	b, err := os.ReadFile(c.Config)
	if err != nil {
		return nil, fmt.Errorf("credential provider config: %w", err)
	}
	var f providerConfigFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("credential provider config %s: %w", c.Config, err)
	}
	if f.Kind != "CredentialProviderConfig" || !strings.HasPrefix(f.APIVersion, "kubelet.config.k8s.io/") {
		return nil, fmt.Errorf("credential provider config %s: kind %q, apiVersion %q; want a CredentialProviderConfig of kubelet.config.k8s.io", c.Config, f.Kind, f.APIVersion)
	}
	out := &CredentialProviders{now: time.Now}
	for _, p := range f.Providers {
		switch {
		case p.Name == "" || strings.ContainsAny(p.Name, `/\`) || p.Name == "." || p.Name == "..":
			return nil, fmt.Errorf("credential provider config %s: provider name %q is not a file name in %s", c.Config, p.Name, c.BinDir)
		case len(p.MatchImages) == 0:
			return nil, fmt.Errorf("credential provider %s: matchImages is empty", p.Name)
		case p.APIVersion != credentialProviderAPI:
			return nil, fmt.Errorf("credential provider %s: apiVersion %q; this node speaks %s", p.Name, p.APIVersion, credentialProviderAPI)
		case len(p.TokenAttributes) > 0 && string(p.TokenAttributes) != "null":
			return nil, fmt.Errorf("credential provider %s: tokenAttributes (service account tokens) are not supported: the node's fetches belong to no pod", p.Name)
		}
		for _, m := range p.MatchImages {
			if _, err := parseImageURL(m); err != nil {
				return nil, fmt.Errorf("credential provider %s: matchImages %q: %v", p.Name, m, err)
			}
		}
		path := filepath.Join(c.BinDir, p.Name)
		if st, err := os.Stat(path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("credential provider %s: no executable %s", p.Name, path)
		}
		out.providers = append(out.providers, &credentialProvider{cfg: p, path: path, cache: map[string]cachedAnswer{}})
	}
	return out, nil
}

// RepositoryCredential implements RepositoryCredentials: the first
// provider whose matchImages cover the repository and that answers with
// credentials for it.
func (cp *CredentialProviders) RepositoryCredential(ctx context.Context, host, repository string) (auth.Credential, bool, error) {
	if cp == nil {
		return auth.EmptyCredential, false, nil
	}
	image := host + "/" + repository
	var firstErr error
	for _, p := range cp.providers {
		if !p.matches(image) {
			continue
		}
		answer, err := p.credentials(ctx, image, host, cp.now())
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if kv, ok := bestMatch(answer, image); ok {
			return auth.Credential{Username: kv.Username, Password: kv.Password}, true, nil
		}
	}
	return auth.EmptyCredential, false, firstErr
}

func (p *credentialProvider) matches(image string) bool {
	for _, m := range p.cfg.MatchImages {
		if imageMatches(m, image) {
			return true
		}
	}
	return false
}

// credentials returns the plugin's answer for image, from the cache while
// an answer covering it lasts.
func (p *credentialProvider) credentials(ctx context.Context, image, host string, now time.Time) (map[string]providerAuthKV, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, key := range []string{cacheKeyImage + ":" + image, cacheKeyRegistry + ":" + host, cacheKeyGlobal} {
		if a, ok := p.cache[key]; ok {
			if now.Before(a.expires) {
				return a.auth, nil
			}
			delete(p.cache, key)
		}
	}
	resp, err := p.exec(ctx, image)
	if err != nil {
		return nil, err
	}
	ttl := time.Duration(0)
	if p.cfg.DefaultCacheDuration != nil {
		ttl = p.cfg.DefaultCacheDuration.Duration
	}
	if resp.CacheDuration != nil {
		ttl = resp.CacheDuration.Duration
	}
	if ttl > 0 {
		key := cacheKeyImage + ":" + image
		switch resp.CacheKeyType {
		case cacheKeyRegistry:
			key = cacheKeyRegistry + ":" + host
		case cacheKeyGlobal:
			key = cacheKeyGlobal
		}
		p.cache[key] = cachedAnswer{auth: resp.Auth, expires: now.Add(ttl)}
	}
	return resp.Auth, nil
}

// exec runs the plugin once.
func (p *credentialProvider) exec(ctx context.Context, image string) (*providerResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, providerCallTimeout)
	defer cancel()
	req, err := json.Marshal(providerRequest{APIVersion: credentialProviderAPI, Kind: "CredentialProviderRequest", Image: image})
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, p.path, p.cfg.Args...)
	cmd.Env = os.Environ()
	for _, e := range p.cfg.Env {
		cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(req), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("credential provider %s: %w: %s", p.cfg.Name, err, strings.TrimSpace(stderr.String()))
	}
	var resp providerResponse
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return nil, fmt.Errorf("credential provider %s: its answer: %w", p.cfg.Name, err)
	}
	if resp.Kind != "CredentialProviderResponse" || resp.APIVersion != credentialProviderAPI {
		return nil, fmt.Errorf("credential provider %s answered kind %q, apiVersion %q; want CredentialProviderResponse of %s", p.cfg.Name, resp.Kind, resp.APIVersion, credentialProviderAPI)
	}
	switch resp.CacheKeyType {
	case cacheKeyImage, cacheKeyRegistry, cacheKeyGlobal:
	default:
		return nil, fmt.Errorf("credential provider %s answered cacheKeyType %q; want Image, Registry or Global", p.cfg.Name, resp.CacheKeyType)
	}
	return &resp, nil
}

// bestMatch picks, of a plugin's auth entries, the most specific one that
// matches image.
func bestMatch(entries map[string]providerAuthKV, image string) (providerAuthKV, bool) {
	best, found := "", false
	for k := range entries {
		if imageMatches(k, image) && (!found || len(k) > len(best) || (len(k) == len(best) && k < best)) {
			best, found = k, true
		}
	}
	return entries[best], found
}

// imageMatches says whether a matchImages pattern (or an auth key) covers
// an image, as kubelet matches them: the same number of host labels, each
// matched by a glob ("*.registry.io" matches "eu.registry.io", not
// "registry.io"), the same port, and the pattern's path a prefix of the
// image's on a path segment boundary.
func imageMatches(pattern, image string) bool {
	pu, err := parseImageURL(pattern)
	if err != nil {
		return false
	}
	iu, err := parseImageURL(image)
	if err != nil {
		return false
	}
	ph, pport := splitPort(pu.Host)
	ih, iport := splitPort(iu.Host)
	if pport != iport {
		return false
	}
	pl, il := strings.Split(ph, "."), strings.Split(ih, ".")
	if len(pl) != len(il) {
		return false
	}
	for i := range pl {
		if ok, err := filepath.Match(pl[i], il[i]); err != nil || !ok {
			return false
		}
	}
	pp := strings.TrimSuffix(pu.Path, "/")
	return pp == "" || iu.Path == pp || strings.HasPrefix(iu.Path, pp+"/")
}

func parseImageURL(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Host == "" {
		return nil, errors.New("no registry host")
	}
	return u, nil
}

func splitPort(hostport string) (string, string) {
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		return h, p
	}
	return hostport, ""
}
