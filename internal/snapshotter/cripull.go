package snapshotter

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/distribution/reference"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageRepository returns the registry host and repository of an image
// reference as CRI names it ("nginx" is docker.io's library/nginx).
func ImageRepository(image string) (host, repository string, err error) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", "", fmt.Errorf("image %q: %w", image, err)
	}
	return reference.Domain(named), reference.Path(named), nil
}

// PullRecorder keeps the credentials of pulls through the CRI proxy.
type PullRecorder struct {
	Credentials *PullCredentials
	Log         *slog.Logger
	// Changed, when set, is told of a repository whose credentials
	// changed (the resolver forgets what it could not read with the old
	// ones).
	Changed func(host, repository string)
}

// RecordPull keeps the credentials of a PullImage for the image's
// repository before the pull goes to the runtime (the runtime's pull
// prepares the snapshots that need them), and puts back what was there if
// the pull fails: credentials the registry refused never replace working
// ones. A pull without credentials changes nothing.
func (r *PullRecorder) RecordPull(_ context.Context, image string, a *runtimeapi.AuthConfig) func(error) {
	host, repo, err := ImageRepository(image)
	if err != nil {
		return nil
	}
	cred, ok := fromCRI(host, a)
	if !ok {
		return nil
	}
	prev, had, err := r.Credentials.Put(host, repo, cred)
	if err != nil {
		r.Log.Warn("could not keep a pull's credentials; its image's layers are fetched with the node's", "image", image, "err", err)
		return nil
	}
	if !had || !sameSecrets(prev, cred) {
		r.Log.Info("credentials of a CRI pull kept for the image's repository", "registry", host, "repository", repo, "replaced", had)
		if r.Changed != nil {
			r.Changed(host, repo)
		}
	}
	return func(pullErr error) {
		if pullErr == nil {
			return
		}
		if err := r.Credentials.Restore(host, repo, cred, prev, had); err != nil {
			r.Log.Warn("could not put back the credentials a failed pull replaced", "image", image, "err", err)
		}
	}
}

// fromCRI reads a CRI AuthConfig for a registry host. Like containerd, it
// ignores one whose server address names another registry.
func fromCRI(host string, a *runtimeapi.AuthConfig) (PullCredential, bool) {
	if a == nil {
		return PullCredential{}, false
	}
	if addr := a.GetServerAddress(); addr != "" && !sameRegistry(serverHost(addr), host) {
		return PullCredential{}, false
	}
	c := PullCredential{Username: a.GetUsername(), Password: a.GetPassword(), IdentityToken: a.GetIdentityToken(), RegistryToken: a.GetRegistryToken()}
	if c.Username == "" && c.Password == "" && a.GetAuth() != "" {
		if b, err := base64.StdEncoding.DecodeString(a.GetAuth()); err == nil {
			c.Username, c.Password, _ = strings.Cut(string(b), ":")
		}
	}
	return c, !c.Empty()
}

// serverHost is the host of a server address as docker's config keys
// them: "https://index.docker.io/v1/", "registry.example:5000".
func serverHost(addr string) string {
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return addr
	}
	return u.Host
}

func sameRegistry(a, b string) bool {
	hub := func(h string) string {
		switch h {
		case "index.docker.io", "registry-1.docker.io":
			return "docker.io"
		}
		return h
	}
	return hub(a) == hub(b)
}

// KubeletSetting says how to point kubelet at the CRI proxy listening on
// listen, so that pods' pull secrets reach the node's lazy fetches.
func KubeletSetting(listen string) string {
	return fmt.Sprintf(`for pods' image pull secrets to reach lazy fetches, serve the CRI proxy and point kubelet at it:
  snapshotter config:    criProxy: {listen: %[1]s, upstream: %[2]s}
  kubelet config file:   imageServiceEndpoint: unix://%[1]s
  (or kubelet flag:      --image-service-endpoint=unix://%[1]s)
`, listen, DefaultCRIUpstream)
}
