package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/sluicehq/sluice/internal/client"
)

type loginFlags struct {
	name, url          string
	username, password string
	passwordStdin      bool
	store              string
}

func (a *App) newLoginCmd() *cobra.Command {
	var f loginFlags
	cmd := &cobra.Command{
		Use:   "login [NAME] [--url URL] -u USER (-p PASSWORD | --password-stdin)",
		Short: "Log in to a registry and remember it under a name",
		Long: `Login checks the credentials against the registry and saves the registry
under NAME with its URL, so that --registry NAME (or -n NAME) selects it.
The scheme of the URL decides TLS: http:// talks plain HTTP.

Credentials are kept in the user's configuration file ($SLUICE_CONFIG, else
$XDG_CONFIG_HOME/sluice/config.yaml, else ~/.config/sluice/config.yaml,
mode 0600), or in the docker credential store when docker's config.json
names a credential helper (--credential-store docker|config to choose).
A token's name and one of its passwords log in like a user.

The first registry logged in to becomes the default (defaults.acr).`,
		Example: `  sluice login myregistry --url http://127.0.0.1:5000 -u admin -p "$PASS"
  echo "$PASS" | sluice login myregistry --url https://registry.example.com -u ci-token --password-stdin
  sluice login myregistry        # check the saved credentials again`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if f.name != "" && f.name != args[0] {
					return usageErrorf("give the registry's name once (%q or --name %q)", args[0], f.name)
				}
				f.name = args[0]
			}
			if f.name == "" {
				f.name = a.flags.registry
			}
			return a.login(cmd.Context(), &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.name, "name", "n", "", "the name to save the registry under")
	fl.StringVar(&f.url, "url", "", "the registry's URL: http://host:port or https://host (default: the saved one)")
	fl.StringVarP(&f.username, "username", "u", "", "user or token name")
	fl.StringVarP(&f.password, "password", "p", "", "password")
	fl.BoolVar(&f.passwordStdin, "password-stdin", false, "read the password from standard input")
	fl.StringVar(&f.store, "credential-store", "auto", "where to keep the credentials: auto, config or docker")
	return cmd
}

func (a *App) login(ctx context.Context, f *loginFlags) error {
	if f.name == "" {
		return usageErrorf("name the registry: sluice login NAME --url URL -u USER -p PASSWORD")
	}
	if !slices.Contains([]string{"auto", "config", "docker"}, f.store) {
		return usageErrorf("--credential-store %q: use auto, config or docker", f.store)
	}
	if f.passwordStdin {
		if f.password != "" {
			return usageErrorf("give -p or --password-stdin, not both")
		}
		line, err := bufio.NewReader(a.Stdin).ReadString('\n')
		if err != nil && err != io.EOF {
			return fmt.Errorf("reading the password: %w", err)
		}
		f.password = strings.TrimRight(line, "\r\n")
	}
	c, err := a.config()
	if err != nil {
		return err
	}
	entry, err := loginEntry(c, f)
	if err != nil {
		return err
	}
	reg := &Registry{Name: entry.Name, entry: &entry}
	if reg.URL, err = parseRegistryURL(entry.URL); err != nil {
		return err
	}
	cred := auth.Credential{Username: f.username, Password: f.password}
	switch {
	case f.username == "" && f.password == "":
		cred = a.credential(ctx, reg)
		if cred.Username == "" {
			return usageErrorf("give the credentials: -u USER -p PASSWORD (or --password-stdin)")
		}
	case f.username == "" || f.password == "":
		return usageErrorf("give both -u USER and -p PASSWORD (or --password-stdin)")
	}
	cl := client.New(reg.Host(), client.Options{PlainHTTP: reg.PlainHTTP(), Transport: a.transport(),
		Credential: client.StaticCredential(reg.Host(), cred.Username, cred.Password), UserAgent: "sluice-cli"})
	if _, _, err := cl.API(ctx, "GET", "/v2/", nil, nil); err != nil {
		return fmt.Errorf("logging in to %s as %s: %w", reg.URL, cred.Username, err)
	}
	if err := a.saveCredential(ctx, &entry, cred, f.store); err != nil {
		return err
	}
	if old := c.registry(entry.Name); old != nil {
		*old = entry
	} else {
		c.Registries = append(c.Registries, entry)
	}
	madeDefault := false
	if c.defaultRegistry() == "" {
		_ = c.set("defaults.acr", entry.Name)
		madeDefault = true
	}
	if err := c.save(); err != nil {
		return err
	}
	a.hint("Login Succeeded")
	if madeDefault {
		a.hint("%s is now the default registry (defaults.acr).", entry.Name)
	}
	return a.print(registryJSON(&entry, c, madeDefault), nil)
}

// loginEntry is the registry a login saves: the configured one of that
// name, with the --url given; a new one needs --url, unless its name is
// its address.
func loginEntry(c *userConfig, f *loginFlags) (registryEntry, error) {
	entry := registryEntry{Name: f.name}
	if old := c.registry(f.name); old != nil {
		entry = *old
	}
	switch {
	case f.url != "":
		u, err := parseRegistryURL(f.url)
		if err != nil {
			return entry, err
		}
		entry.URL = u.String()
	case entry.URL == "" && (strings.ContainsAny(f.name, ".:") || f.name == "localhost"):
		u, err := parseRegistryURL(f.name)
		if err != nil {
			return entry, err
		}
		entry.Name, entry.URL = u.Host, u.String()
	case entry.URL == "":
		return entry, usageErrorf("registry %q is new: give its URL with --url (http://host:port or https://host)", f.name)
	}
	return entry, nil
}

// saveCredential puts the credentials in the docker credential store or
// in the entry, as store ("auto": docker when docker names a helper).
func (a *App) saveCredential(ctx context.Context, e *registryEntry, cred auth.Credential, store string) error {
	if store == "auto" {
		store = "config"
		if a.dockerHelperConfigured(e.Host()) {
			store = "docker"
		}
	}
	if store == "docker" {
		s, err := a.dockerStore()
		if err != nil {
			return err
		}
		if err := s.Put(ctx, e.Host(), cred); err != nil {
			return fmt.Errorf("saving the credentials in the docker credential store: %w", err)
		}
		e.Username, e.Password, e.CredentialStore = "", "", "docker"
		return nil
	}
	e.Username, e.Password, e.CredentialStore = cred.Username, cred.Password, ""
	return nil
}

// registryJSON is a configured registry as login and config get show it
// (never its password).
func registryJSON(e *registryEntry, c *userConfig, isDefault bool) map[string]any {
	store := "config"
	if e.CredentialStore != "" {
		store = e.CredentialStore
	}
	out := map[string]any{"name": e.Name, "url": e.URL, "credentialStore": store, "default": isDefault || c.defaultRegistry() == e.Name}
	if e.Username != "" {
		out["username"] = e.Username
	}
	return out
}

func (a *App) newLogoutCmd() *cobra.Command {
	var forget bool
	var name string
	cmd := &cobra.Command{
		Use:   "logout [NAME]",
		Short: "Forget a registry's credentials",
		Long: `Logout removes the saved credentials of a registry (the default one when
no name is given) from the configuration or the docker credential store.
With --forget the registry's name and URL go too.`,
		Example: "  sluice logout myregistry\n  sluice logout myregistry --forget",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				name = args[0]
			}
			if name == "" {
				name = a.flags.registry
			}
			c, err := a.config()
			if err != nil {
				return err
			}
			if name == "" {
				name = c.defaultRegistry()
			}
			e := c.lookupRegistry(name)
			if e == nil {
				return &usageError{fmt.Errorf("no registry named %q is configured", name)}
			}
			if e.CredentialStore == "docker" {
				if s, err := a.dockerStore(); err == nil {
					if err := s.Delete(cmd.Context(), e.Host()); err != nil {
						return fmt.Errorf("removing the credentials from the docker credential store: %w", err)
					}
				}
			}
			e.Username, e.Password, e.CredentialStore = "", "", ""
			if forget {
				gone := e.Name
				c.Registries = slices.DeleteFunc(c.Registries, func(r registryEntry) bool { return r.Name == gone })
				for _, k := range []string{"acr", "registry"} {
					if c.Defaults[k] == gone {
						delete(c.Defaults, k)
					}
				}
			}
			return c.save()
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "the registry's name")
	cmd.Flags().BoolVar(&forget, "forget", false, "also forget the registry's name and URL")
	return cmd
}
