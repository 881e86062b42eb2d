package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/sluicehq/sluice/internal/client"
)

// azureSuffix is the login server suffix of the managed registry: a guide's
// NAME.azurecr.io means the registry configured as NAME.
const azureSuffix = ".azurecr.io"

// Registry is a registry a command talks to: a configured one (sluice
// login) or one named by its address.
type Registry struct {
	// Name is the configured name, or the host for an unconfigured one.
	Name string
	// URL is the registry's base URL (scheme and host[:port]).
	URL   *url.URL
	entry *registryEntry
}

// Host is the registry's host[:port].
func (r *Registry) Host() string { return r.URL.Host }

// PlainHTTP reports whether the registry is reached without TLS.
func (r *Registry) PlainHTTP() bool { return r.URL.Scheme == "http" }

// isLoopback reports whether host[:port] is this machine.
func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// parseRegistryURL reads http(s)://host[:port] or a bare host[:port]
// (HTTPS, or plain HTTP for a loopback address).
func parseRegistryURL(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		scheme := "https"
		if isLoopback(s) {
			scheme = "http"
		}
		s = scheme + "://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, usageErrorf("%q is not a registry address: use host[:port], http://host[:port] or https://host[:port]", s)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, usageErrorf("%q: a registry URL has no path", s)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// lookupRegistry finds s among the configured registries: by name, by
// host, or as NAME.azurecr.io for a configured NAME. It returns nil when s
// is none of them.
func (c *userConfig) lookupRegistry(s string) *registryEntry {
	if e := c.registry(s); e != nil {
		return e
	}
	host := s
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		host = u.Host
	}
	if e := c.registryByHost(host); e != nil {
		return e
	}
	if name, ok := strings.CutSuffix(strings.ToLower(host), azureSuffix); ok {
		return c.registry(name)
	}
	return nil
}

// looksLikeRegistry reports whether the first component of an image
// reference names a registry rather than a repository namespace: it has a
// dot or a port, is localhost, or is a configured registry's name.
func (c *userConfig) looksLikeRegistry(first string) bool {
	return strings.ContainsAny(first, ".:") || first == "localhost" || c.registry(first) != nil
}

// resolveRegistry turns a --registry value into a Registry.
func (a *App) resolveRegistry(s string) (*Registry, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	if e := c.lookupRegistry(s); e != nil {
		u, err := parseRegistryURL(e.URL)
		if err != nil {
			return nil, fmt.Errorf("registry %s in %s: %w", e.Name, c.path, err)
		}
		return &Registry{Name: e.Name, URL: u, entry: e}, nil
	}
	if !strings.ContainsAny(s, ".:") && s != "localhost" {
		return nil, usageErrorf("no registry named %q: log in to it with 'sluice login %s --url URL -u USER -p PASSWORD', or give its address (host:port or a URL)", s, s)
	}
	u, err := parseRegistryURL(s)
	if err != nil {
		return nil, err
	}
	return &Registry{Name: u.Host, URL: u}, nil
}

// registry resolves the registry a command works on: --registry/-r, else
// the --name/-n of commands that name the registry with it, else
// defaults.registry or defaults.acr.
func (a *App) registry() (*Registry, error) {
	name := a.flags.registry
	if a.flags.registryName != "" {
		if name != "" && name != a.flags.registryName {
			return nil, usageErrorf("--registry %q and --name %q name different registries; give one", name, a.flags.registryName)
		}
		name = a.flags.registryName
	}
	if name == "" {
		name = a.getenv("SLUICE_REGISTRY")
	}
	if name == "" {
		c, err := a.config()
		if err != nil {
			return nil, err
		}
		name = c.defaultRegistry()
	}
	if name == "" {
		return nil, usageErrorf("no registry given: pass --registry NAME (or -n NAME), or set a default with 'sluice config set defaults.acr=NAME'")
	}
	return a.resolveRegistry(name)
}

// credential returns the credentials for a registry: $SLUICE_USERNAME and
// $SLUICE_PASSWORD when both are set, else those saved by sluice login
// (in the configuration or the docker credential store), else the docker
// credential store's for its host.
func (a *App) credential(ctx context.Context, r *Registry) auth.Credential {
	if u, p := a.getenv("SLUICE_USERNAME"), a.getenv("SLUICE_PASSWORD"); u != "" && p != "" {
		return auth.Credential{Username: u, Password: p}
	}
	if e := r.entry; e != nil && e.CredentialStore == "" && e.Username != "" {
		return auth.Credential{Username: e.Username, Password: e.Password}
	}
	return a.dockerCredential(ctx, r.Host())
}

// Client returns an authenticated client of a registry.
func (a *App) Client(ctx context.Context, r *Registry) *client.Client {
	cred := a.credential(ctx, r)
	var credFn auth.CredentialFunc
	if cred != auth.EmptyCredential {
		a.sentCredentials = true
		credFn = client.StaticCredential(r.Host(), cred.Username, cred.Password)
		if cred.RefreshToken != "" {
			credFn = auth.StaticCredential(r.Host(), cred)
		}
	}
	return client.New(r.Host(), client.Options{PlainHTTP: r.PlainHTTP(), Credential: credFn, Transport: a.transport(), UserAgent: "sluice-cli"})
}

// call calls the management API of the command's registry and prints the
// answer, or its field key when key is not "".
func (a *App) call(ctx context.Context, method, path string, body any, key string, table tableFunc) error {
	reg, err := a.registry()
	if err != nil {
		return err
	}
	return a.callOn(ctx, reg, method, path, body, key, table)
}

// callOn is call on a given registry.
func (a *App) callOn(ctx context.Context, reg *Registry, method, path string, body any, key string, table tableFunc) error {
	b, _, err := a.Client(ctx, reg).API(ctx, method, path, nil, body)
	if err != nil || len(b) == 0 {
		return err
	}
	raw := json.RawMessage(b)
	if key != "" {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		if raw = m[key]; raw == nil {
			return fmt.Errorf("%s %s: the answer has no %q", method, path, key)
		}
	}
	return a.print(raw, table)
}

// transport is the HTTP transport of every request: the test's, or a
// retrying one; with --debug, each request is logged to stderr.
func (a *App) transport() http.RoundTripper {
	tr := a.Transport
	if tr == nil {
		tr = retry.NewTransport(http.DefaultTransport)
	}
	if a.flags.debug {
		tr = debugTransport{next: tr, app: a}
	}
	return tr
}

type debugTransport struct {
	next http.RoundTripper
	app  *App
}

func (d debugTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := d.next.RoundTrip(req)
	if err != nil {
		fmt.Fprintf(d.app.Stderr, "DEBUG: %s %s: %v\n", req.Method, req.URL.Redacted(), err)
		return nil, err
	}
	fmt.Fprintf(d.app.Stderr, "DEBUG: %s %s -> %d (%s)\n", req.Method, req.URL.Redacted(), resp.StatusCode, time.Since(start).Round(time.Millisecond))
	return resp, nil
}

// imageRef is REPOSITORY[:TAG] or REPOSITORY@DIGEST.
type imageRef struct {
	Repository string
	Tag        string
	Digest     string
}

// Reference is the tag or the digest.
func (r imageRef) Reference() string {
	if r.Digest != "" {
		return r.Digest
	}
	return r.Tag
}

func (r imageRef) String() string {
	if r.Digest != "" {
		return r.Repository + "@" + r.Digest
	}
	return r.Repository + ":" + r.Tag
}

// parseImage reads REPOSITORY[:TAG] or REPOSITORY@DIGEST; the tag defaults
// to latest.
func parseImage(s string) (imageRef, error) {
	var r imageRef
	if repo, dgst, ok := strings.Cut(s, "@"); ok {
		r.Repository, r.Digest = repo, dgst
		if !strings.Contains(dgst, ":") {
			return r, usageErrorf("image %q: a digest looks like sha256:<hex>", s)
		}
	} else {
		r.Repository, r.Tag = s, "latest"
		if i := strings.LastIndexByte(s, ':'); i > strings.LastIndexByte(s, '/') {
			r.Repository, r.Tag = s[:i], s[i+1:]
		}
	}
	if r.Repository == "" || r.Reference() == "" || strings.Contains(r.Repository, "://") {
		return r, usageErrorf("image %q: use REPOSITORY:TAG or REPOSITORY@DIGEST", s)
	}
	return r, nil
}

// splitRegistry splits a fully qualified reference (REGISTRY/REPO:TAG,
// with an optional http(s):// scheme) into its registry part and the rest;
// registry is "" when the first component is a repository namespace.
func (c *userConfig) splitRegistry(s string) (registry, rest string) {
	scheme := ""
	for _, p := range []string{"http://", "https://"} {
		if t, ok := strings.CutPrefix(s, p); ok {
			scheme, s = p, t
		}
	}
	first, rest, ok := strings.Cut(s, "/")
	if !ok || (scheme == "" && !c.looksLikeRegistry(first)) {
		return "", scheme + s
	}
	return scheme + first, rest
}
