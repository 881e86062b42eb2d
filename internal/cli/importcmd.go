package cli

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
)

type importFlags struct {
	source             string
	targets, untagged  []string
	username, password string
	force, noWait      bool
}

func (a *App) newImportCmd() *cobra.Command {
	var f importFlags
	cmd := &cobra.Command{
		Use:   "import --source REGISTRY/REPOSITORY:TAG [-t REPOSITORY:TAG]... [--force] [--no-wait]",
		Short: "Copy an image from another registry into this one, in the registry",
		Long: `Import copies an image (every platform of an index, digests preserved) from
another registry, server-side: the registry pulls it. It waits for the
copy, with a progress bar on a terminal, unless --no-wait.

--source is REGISTRY/REPOSITORY:TAG or @DIGEST. REGISTRY is a host[:port]
(HTTPS; plain HTTP for a loopback address), an http:// or https:// URL, or
the name of a registry configured with sluice login, whose URL and saved
credentials are then used. Without a registry part the source is on
Docker Hub. --username and --password are for the source registry; they
are kept in the registry's memory only.

The target defaults to the source's REPOSITORY:TAG. In an auto-streaming
repository the imported image is converted too.`,
		Example: `  sluice import --source registry.example.com/library/python:3.12 -t python:3.12
  sluice import -n myregistry --source upstream/team/app:1.0 -t team/app:1.0 --force
  sluice import --source http://127.0.0.1:5001/team/app:1.0 -u reader -p "$PASS" --no-wait`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runImport(cmd.Context(), &f)
		},
	}
	a.registryNameFlag(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.source, "source", "", "the source image: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@DIGEST")
	fl.StringArrayVarP(&f.targets, "image", "t", nil, "a target REPOSITORY:TAG (repeatable)")
	fl.StringArrayVar(&f.untagged, "repository", nil, "a target repository receiving the image untagged (repeatable)")
	fl.StringVarP(&f.username, "username", "u", "", "user name for the source registry")
	fl.StringVarP(&f.password, "password", "p", "", "password for the source registry")
	fl.BoolVar(&f.force, "force", false, "overwrite target tags that exist")
	fl.BoolVar(&f.noWait, "no-wait", false, "return once the import is queued")
	_ = cmd.MarkFlagRequired("source")
	return cmd
}

// importRequest is the body of POST /acr/v1/_import.
type importRequest struct {
	Source struct {
		RegistryURI string             `json:"registryUri"`
		SourceImage string             `json:"sourceImage"`
		Credentials *importCredentials `json:"credentials,omitempty"`
	} `json:"source"`
	TargetTags                 []string `json:"targetTags,omitempty"`
	UntaggedTargetRepositories []string `json:"untaggedTargetRepositories,omitempty"`
	Mode                       string   `json:"mode"`
}

type importCredentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (a *App) runImport(ctx context.Context, f *importFlags) error {
	req, err := a.importRequest(ctx, f)
	if err != nil {
		return err
	}
	return a.startOperation(ctx, longOperation{path: "/acr/v1/_import", body: req, what: "importing " + f.source, label: "Importing", noWait: f.noWait})
}

// importRequest builds the import's body from the flags: the source's
// registry URL and image, its credentials, and the targets.
func (a *App) importRequest(ctx context.Context, f *importFlags) (*importRequest, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	regPart, rest := c.splitRegistry(f.source)
	img, err := parseImage(rest)
	if err != nil {
		return nil, usageErrorf("--source %q: use REGISTRY/REPOSITORY:TAG", f.source)
	}
	req := &importRequest{Mode: "NoForce"}
	if f.force {
		req.Mode = "Force"
	}
	switch {
	case regPart == "":
		req.Source.RegistryURI = "docker.io"
		if !strings.Contains(img.Repository, "/") {
			img.Repository = "library/" + img.Repository
		}
	default:
		src, err := a.resolveRegistry(regPart)
		if err != nil {
			return nil, err
		}
		req.Source.RegistryURI = src.URL.String()
		if f.username == "" && f.password == "" && src.entry != nil {
			if cred := a.credential(ctx, src); cred.Username != "" {
				req.Source.Credentials = &importCredentials{Username: cred.Username, Password: cred.Password}
			}
		}
	}
	req.Source.SourceImage = img.String()
	switch {
	case f.username != "" && f.password != "":
		req.Source.Credentials = &importCredentials{Username: f.username, Password: f.password}
	case f.username != "" || f.password != "":
		return nil, usageErrorf("give both --username and --password for the source registry")
	}
	req.TargetTags, req.UntaggedTargetRepositories = f.targets, f.untagged
	if len(req.TargetTags) == 0 && len(req.UntaggedTargetRepositories) == 0 {
		if img.Digest != "" {
			req.UntaggedTargetRepositories = []string{img.Repository}
		} else {
			req.TargetTags = []string{img.String()}
		}
	}
	for _, t := range req.TargetTags {
		if !strings.Contains(t, ":") {
			return nil, usageErrorf("--image %q: use REPOSITORY:TAG", t)
		}
	}
	return req, nil
}
