package snapshotter

import (
	"context"
	"log/slog"
	"strings"

	"oras.land/oras-go/v2/registry/remote/auth"
)

// RepositoryCredentials answer with credentials for one repository of a
// registry, not for the registry as a whole: those a pull through the CRI
// proxy gave, those a kubelet credential provider gives for an image.
type RepositoryCredentials interface {
	// RepositoryCredential returns the credentials for repository on host,
	// ok false when the source has none for it.
	RepositoryCredential(ctx context.Context, host, repository string) (cred auth.Credential, ok bool, err error)
}

// RepositoryCredential implements RepositoryCredentials.
func (p *PullCredentials) RepositoryCredential(_ context.Context, host, repository string) (auth.Credential, bool, error) {
	if p == nil {
		return auth.EmptyCredential, false, nil
	}
	c, ok, err := p.Lookup(host, repository)
	if err != nil || !ok || c.Empty() {
		return auth.EmptyCredential, false, err
	}
	return c.auth(), true, nil
}

// ScopedCredential returns the node's credentials for a request: when the
// request is for one repository (the registry client puts its scope,
// "repository:NAME:pull", in the context), the repository's own
// credentials from sources, in order; else, or when they have none, next
// (the configured ones, then docker's). A request naming no repository, or
// several, never gets a repository's credentials: a pull secret for
// team-a/app serves team-a/app alone.
func ScopedCredential(log *slog.Logger, next auth.CredentialFunc, sources ...RepositoryCredentials) auth.CredentialFunc {
	return func(ctx context.Context, host string) (auth.Credential, error) {
		if repo, ok := repositoryOf(ctx, host); ok {
			for _, s := range sources {
				cred, ok, err := s.RepositoryCredential(ctx, host, repo)
				if err != nil {
					log.Warn("repository credentials unavailable; trying the node's", "registry", host, "repository", repo, "err", err)
					continue
				}
				if ok {
					return cred, nil
				}
			}
		}
		if next == nil {
			return auth.EmptyCredential, nil
		}
		return next(ctx, host)
	}
}

// repositoryOf returns the repository the request in ctx is scoped to on
// host, if exactly one.
func repositoryOf(ctx context.Context, host string) (string, bool) {
	repo := ""
	for _, s := range auth.GetAllScopesForHost(ctx, host) {
		rest, ok := strings.CutPrefix(s, "repository:")
		if !ok {
			continue
		}
		i := strings.LastIndexByte(rest, ':')
		if i <= 0 {
			continue
		}
		name := rest[:i]
		if repo != "" && repo != name {
			return "", false
		}
		repo = name
	}
	return repo, repo != ""
}
