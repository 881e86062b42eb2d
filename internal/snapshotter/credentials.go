package snapshotter

import (
	"context"
	"fmt"
	"os"
	"strings"

	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/sluicehq/sluice/internal/client"
)

// Credential returns the node's credentials: the configured ones first,
// then docker's config.json and its helpers.
func (c *Config) Credential() auth.CredentialFunc {
	return c.credential(client.DockerCredentials())
}

// credential answers with a registry's configured credentials (its
// password, or its password file read at each lookup so that a rotated
// one is used at once), else asks docker (which may be nil).
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
