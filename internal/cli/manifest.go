package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/client"
)

// manifestArgs are az's two ways of naming a manifest or repository: a
// fully qualified REGISTRY/REPOSITORY:TAG argument, or -r REGISTRY with
// -n REPOSITORY:TAG.
type manifestArgs struct {
	name string
}

func (m *manifestArgs) define(cmd *cobra.Command, what string) {
	cmd.Flags().StringVarP(&m.name, "name", "n", "", what)
}

// resolve returns the registry and the REPOSITORY[:TAG|@DIGEST] named.
func (a *App) resolveManifestArgs(m *manifestArgs, args []string) (*Registry, string, error) {
	switch {
	case len(args) > 1:
		return nil, "", usageErrorf("give one fully qualified name, REGISTRY/REPOSITORY:TAG")
	case len(args) == 1 && m.name != "":
		return nil, "", usageErrorf("give either REGISTRY/REPOSITORY:TAG or -r REGISTRY -n REPOSITORY:TAG, not both")
	case len(args) == 1:
		c, err := a.config()
		if err != nil {
			return nil, "", err
		}
		regPart, rest := c.splitRegistry(args[0])
		if regPart == "" {
			// REPOSITORY:TAG alone: on --registry or the default registry.
			reg, err := a.registry()
			return reg, args[0], err
		}
		if a.flags.registry != "" && a.flags.registry != regPart {
			return nil, "", usageErrorf("--registry %q and %q name different registries", a.flags.registry, args[0])
		}
		reg, err := a.resolveRegistry(regPart)
		return reg, rest, err
	case m.name == "":
		return nil, "", usageErrorf("name it: -n REPOSITORY:TAG (with -r REGISTRY or a default registry), or REGISTRY/REPOSITORY:TAG")
	}
	reg, err := a.registry()
	return reg, m.name, err
}

// resolveImage resolves an image's registry, reference and manifest digest.
func (a *App) resolveImage(ctx context.Context, m *manifestArgs, args []string) (*client.Client, imageRef, ocispec.Descriptor, error) {
	reg, spec, err := a.resolveManifestArgs(m, args)
	if err != nil {
		return nil, imageRef{}, ocispec.Descriptor{}, err
	}
	img, err := parseImage(spec)
	if err != nil {
		return nil, img, ocispec.Descriptor{}, err
	}
	cl := a.Client(ctx, reg)
	d, err := cl.Resolve(ctx, img.Repository, img.Reference())
	return cl, img, d, err
}

var referrersTable = columns("manifests", [2]string{"Digest", "digest"}, [2]string{"ArtifactType", "artifactType"},
	[2]string{"MediaType", "mediaType"}, [2]string{"Size", "size"})

var manifestMetadataTable = columns("", [2]string{"Digest", "digest"}, [2]string{"Tags", "tags"}, [2]string{"Architecture", "architecture"},
	[2]string{"OS", "os"}, [2]string{"ArtifactType", "artifactType"}, [2]string{"ImageSize", "imageSize"}, [2]string{"LastUpdateTime", "lastUpdateTime"})

func (a *App) newManifestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "manifest",
		Short: "Show, list, delete and restore manifests; list referrers",
		Long: `Manifest commands name an image as az does: REGISTRY/REPOSITORY:TAG, or
-r REGISTRY -n REPOSITORY:TAG (-n is the image here, not the registry).`,
		Example: `  sluice manifest list-referrers -r myregistry -n team/app:1.0
  sluice manifest show myregistry.azurecr.io/team/app:1.0`,
	}
	cmd.AddCommand(a.newListReferrersCmd(), a.newManifestShowCmd(), a.newManifestShowMetadataCmd(),
		a.newManifestListCmd(false), a.newManifestListCmd(true), a.newManifestUpdateMetadataCmd(), a.newManifestDeleteCmd(),
		a.newManifestListDeletedCmd(false), a.newManifestListDeletedCmd(true), a.newManifestRestoreCmd())
	return cmd
}

func (a *App) newListReferrersCmd() *cobra.Command {
	var m manifestArgs
	var artifactType string
	var recursive bool
	cmd := &cobra.Command{
		Use:   "list-referrers [REGISTRY/REPOSITORY:TAG] [-n REPOSITORY:TAG] [--artifact-type TYPE] [--recursive]",
		Short: "List the artifacts that refer to an image (streaming artifacts, signatures, SBOMs)",
		Long: `List-referrers lists the manifests whose subject is the image, through the
referrers API, or the referrers tag (sha256-<hex>) of registries without it.
--recursive adds the referrers of the referrers.`,
		Example: `  sluice manifest list-referrers -r myregistry -n team/app:1.0
  sluice manifest list-referrers -n team/app:1.0 --artifact-type application/vnd.azure.artifact.streaming.v1 -o table`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cl, img, d, err := a.resolveImage(ctx, &m, args)
			if err != nil {
				return err
			}
			refs, err := cl.Referrers(ctx, img.Repository, d.Digest, artifactType)
			if err != nil {
				return err
			}
			if recursive {
				if refs, err = referrersBelow(ctx, cl, img.Repository, refs, map[digest.Digest]bool{d.Digest: true}); err != nil {
					return err
				}
			}
			if refs == nil {
				refs = []ocispec.Descriptor{}
			}
			return a.print(map[string]any{"manifests": refs}, referrersTable)
		},
	}
	m.define(cmd, "the image: REPOSITORY:TAG or REPOSITORY@DIGEST")
	cmd.Flags().StringVar(&artifactType, "artifact-type", "", "only referrers of this artifact type")
	cmd.Flags().BoolVar(&recursive, "recursive", false, "also list the referrers of each referrer, all the way down")
	return cmd
}

// referrersBelow appends, after refs, the referrers of each referrer, depth
// first; seen stops cycles.
func referrersBelow(ctx context.Context, cl *client.Client, repo string, refs []ocispec.Descriptor, seen map[digest.Digest]bool) ([]ocispec.Descriptor, error) {
	out := append([]ocispec.Descriptor(nil), refs...)
	for _, r := range refs {
		if seen[r.Digest] {
			continue
		}
		seen[r.Digest] = true
		sub, err := cl.Referrers(ctx, repo, r.Digest, "")
		if err != nil {
			return nil, err
		}
		if len(sub) > 0 {
			below, err := referrersBelow(ctx, cl, repo, sub, seen)
			if err != nil {
				return nil, err
			}
			out = append(out, below...)
		}
	}
	return out, nil
}

func (a *App) newManifestShowCmd() *cobra.Command {
	var m manifestArgs
	var raw bool
	cmd := &cobra.Command{
		Use:   "show [REGISTRY/REPOSITORY:TAG] [-n REPOSITORY:TAG] [--raw]",
		Short: "Show a manifest (--raw: its exact bytes)",
		Example: `  sluice manifest show -n team/app:1.0
  sluice manifest show -n team/app:1.0 --raw | sha256sum`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			reg, spec, err := a.resolveManifestArgs(&m, args)
			if err != nil {
				return err
			}
			img, err := parseImage(spec)
			if err != nil {
				return err
			}
			b, _, err := a.Client(ctx, reg).GetManifest(ctx, img.Repository, img.Reference())
			if err != nil {
				return err
			}
			if raw {
				_, err := a.Stdout.Write(b)
				return err
			}
			return a.print(json.RawMessage(b), nil)
		},
	}
	m.define(cmd, "the image: REPOSITORY:TAG or REPOSITORY@DIGEST")
	cmd.Flags().BoolVar(&raw, "raw", false, "print the manifest's bytes exactly as stored")
	return cmd
}

func (a *App) newManifestShowMetadataCmd() *cobra.Command {
	var m manifestArgs
	cmd := &cobra.Command{
		Use:     "show-metadata [REGISTRY/REPOSITORY:TAG] [-n REPOSITORY:TAG]",
		Short:   "Show a manifest's metadata: size, platform, tags, attributes",
		Example: "  sluice manifest show-metadata -n team/app:1.0 -o table",
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, spec, err := a.resolveManifestArgs(&m, args)
			if err != nil {
				return err
			}
			return a.manifestMetadata(cmd.Context(), reg, spec, "GET", nil)
		},
	}
	m.define(cmd, "the image: REPOSITORY:TAG or REPOSITORY@DIGEST")
	return cmd
}

// manifestMetadata shows (or with a body, patches) a manifest's metadata.
func (a *App) manifestMetadata(ctx context.Context, reg *Registry, spec, method string, body any) error {
	img, err := parseImage(spec)
	if err != nil {
		return err
	}
	return a.callOn(ctx, reg, method, "/acr/v1/"+img.Repository+"/_manifests/"+img.Reference(), body, "manifest", manifestMetadataTable)
}

func (a *App) newManifestUpdateMetadataCmd() *cobra.Command {
	var m manifestArgs
	var f attributeFlags
	cmd := &cobra.Command{
		Use:     "update-metadata [REGISTRY/REPOSITORY:TAG] [-n REPOSITORY:TAG] [--write-enabled true|false]...",
		Short:   "Change a manifest's attributes",
		Example: "  sluice manifest update-metadata -n team/app:1.0 --delete-enabled false",
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, spec, err := a.resolveManifestArgs(&m, args)
			if err != nil {
				return err
			}
			body := f.patch()
			if len(body) == 0 {
				return usageErrorf("give an attribute to change, e.g. --write-enabled false")
			}
			return a.manifestMetadata(cmd.Context(), reg, spec, "PATCH", body)
		},
	}
	m.define(cmd, "the image: REPOSITORY:TAG or REPOSITORY@DIGEST")
	f.define(cmd, false)
	return cmd
}

// repositoryOf reads a repository name given as -n or REGISTRY/REPOSITORY.
func (a *App) repositoryOf(m *manifestArgs, args []string) (*Registry, string, error) {
	reg, spec, err := a.resolveManifestArgs(m, args)
	if err != nil {
		return nil, "", err
	}
	if strings.ContainsAny(spec, "@") || strings.LastIndexByte(spec, ':') > strings.LastIndexByte(spec, '/') {
		return nil, "", usageErrorf("%q: give a repository, without a tag or digest", spec)
	}
	return reg, spec, nil
}

func (a *App) newManifestListCmd(metadata bool) *cobra.Command {
	var m manifestArgs
	var top int
	use, short, example := "list", "List the manifests of a repository (their content)", "  sluice manifest list -n team/app --top 5"
	if metadata {
		use, short, example = "list-metadata", "List the manifests of a repository with their metadata", "  sluice manifest list-metadata -n team/app -o table"
	}
	cmd := &cobra.Command{
		Use:     use + " [REGISTRY/REPOSITORY] [-n REPOSITORY] [--top N]",
		Short:   short,
		Example: example,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			reg, repo, err := a.repositoryOf(&m, args)
			if err != nil {
				return err
			}
			cl := a.Client(ctx, reg)
			list, err := listPages(ctx, cl, "/acr/v1/"+repo+"/_manifests", "manifests", top)
			if err != nil {
				return err
			}
			if metadata {
				return a.print(list, manifestMetadataTable)
			}
			out := make([]json.RawMessage, 0, len(list))
			for _, item := range list {
				d, _ := field(item, "digest").(string)
				b, _, err := cl.GetManifest(ctx, repo, d)
				if err != nil {
					return err
				}
				out = append(out, b)
			}
			return a.print(out, nil)
		},
	}
	m.define(cmd, "the repository")
	cmd.Flags().IntVar(&top, "top", 0, "list at most this many")
	return cmd
}

func (a *App) newManifestDeleteCmd() *cobra.Command {
	var m manifestArgs
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete [REGISTRY/REPOSITORY:TAG] [-n REPOSITORY:TAG] [--yes]",
		Short: "Delete a manifest, its tags and its streaming artifacts",
		Example: `  sluice manifest delete -n team/app:0.9 --yes
  sluice manifest delete -n team/app@sha256:9b2c... --yes`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			reg, spec, err := a.resolveManifestArgs(&m, args)
			if err != nil {
				return err
			}
			if err := a.confirm(yes, "Delete the manifest "+spec+", every tag of it and the artifacts that refer to it?"); err != nil {
				return err
			}
			return a.deleteImage(ctx, a.Client(ctx, reg), spec)
		},
	}
	m.define(cmd, "the image: REPOSITORY:TAG or REPOSITORY@DIGEST")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func (a *App) newManifestListDeletedCmd(tags bool) *cobra.Command {
	var m manifestArgs
	use, short, key := "list-deleted", "List a repository's deleted manifests that soft delete keeps", "manifests"
	if tags {
		use, short, key = "list-deleted-tags", "List a repository's deleted tags that soft delete keeps", "tags"
	}
	cmd := &cobra.Command{
		Use:     use + " [REGISTRY/REPOSITORY] [-n REPOSITORY]",
		Short:   short,
		Example: "  sluice manifest " + use + " -n team/app -o table",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			reg, repo, err := a.repositoryOf(&m, args)
			if err != nil {
				return err
			}
			return a.callOn(ctx, reg, "GET", "/acr/v1/_deleted/"+repo+"/_"+key, nil, key, nil)
		},
	}
	m.define(cmd, "the repository")
	return cmd
}

func (a *App) newManifestRestoreCmd() *cobra.Command {
	var m manifestArgs
	var dgst string
	var force bool
	cmd := &cobra.Command{
		Use:   "restore [REGISTRY/REPOSITORY:TAG] [-n REPOSITORY:TAG] [-d DIGEST] [--force]",
		Short: "Restore a soft-deleted manifest, tagged again",
		Long: `Restore brings back a deleted manifest and tags it. Without --digest it
restores the manifest the tag pointed at when it was last deleted. --force
moves the tag if it points elsewhere now. A subject must be restored
before its referrers; restore is not recursive.`,
		Example: `  sluice manifest restore -n team/app:1.0
  sluice manifest restore -n team/app:1.0 -d sha256:9b2c... --force`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			reg, spec, err := a.resolveManifestArgs(&m, args)
			if err != nil {
				return err
			}
			repo, tag := spec, ""
			if i := strings.LastIndexByte(spec, ':'); i > strings.LastIndexByte(spec, '/') {
				repo, tag = spec[:i], spec[i+1:]
			}
			if strings.Contains(repo, "@") {
				return usageErrorf("%q: give REPOSITORY:TAG and the digest with --digest", spec)
			}
			cl := a.Client(ctx, reg)
			if dgst == "" {
				if tag == "" {
					return usageErrorf("give the tag to restore (-n REPOSITORY:TAG) or the manifest's --digest")
				}
				if dgst, err = lastDeletedDigest(ctx, cl, repo, tag); err != nil {
					return err
				}
			}
			q := url.Values{}
			if force {
				q.Set("force", "true")
			}
			b, _, err := cl.API(ctx, "POST", "/acr/v1/_deleted/"+repo+"/_manifests/"+dgst, q, map[string]string{"tag": tag})
			if err != nil {
				return err
			}
			return a.print(json.RawMessage(b), nil)
		},
	}
	m.define(cmd, "the image to restore: REPOSITORY:TAG")
	cmd.Flags().StringVarP(&dgst, "digest", "d", "", "the deleted manifest's digest (default: the one the tag last pointed at)")
	cmd.Flags().BoolVar(&force, "force", false, "move the tag even if it points at another manifest now")
	return cmd
}

// lastDeletedDigest is the digest a deleted tag pointed at when it was
// last deleted.
func lastDeletedDigest(ctx context.Context, cl *client.Client, repo, tag string) (string, error) {
	b, _, err := cl.API(ctx, "GET", "/acr/v1/_deleted/"+repo+"/_tags", nil, nil)
	if err != nil {
		return "", err
	}
	var page struct {
		Tags []struct {
			Name, Digest, DeletedAt string
		} `json:"tags"`
	}
	if err := json.Unmarshal(b, &page); err != nil {
		return "", err
	}
	found, last := "", ""
	for _, t := range page.Tags {
		if t.Name == tag && t.DeletedAt >= last {
			found, last = t.Digest, t.DeletedAt
		}
	}
	if found == "" {
		return "", fmt.Errorf("no deleted manifest was tagged %s:%s; see 'sluice manifest list-deleted -n %s'", repo, tag, repo)
	}
	return found, nil
}

// confirm asks a question on a terminal; a script must pass --yes.
func (a *App) confirm(yes bool, question string) error {
	if yes {
		return nil
	}
	if !a.terminal(a.Stdin) {
		return usageErrorf("%s Pass --yes to confirm (standard input is not a terminal)", question)
	}
	fmt.Fprintf(a.Stderr, "%s (y/n): ", question)
	line, _ := bufio.NewReader(a.Stdin).ReadString('\n')
	if ans := strings.ToLower(strings.TrimSpace(line)); ans != "y" && ans != "yes" {
		return fmt.Errorf("not confirmed; nothing was deleted")
	}
	return nil
}
