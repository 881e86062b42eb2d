package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/client"
)

// attributeFlags are the changeable attributes an update sets.
type attributeFlags struct {
	deleteEnabled, writeEnabled, readEnabled, listEnabled, teleportEnabled *bool
}

func (f *attributeFlags) define(cmd *cobra.Command, teleport bool) {
	optionalBoolFlag(cmd, &f.deleteEnabled, "delete-enabled", "allow deletes")
	optionalBoolFlag(cmd, &f.writeEnabled, "write-enabled", "allow pushes and deletes")
	optionalBoolFlag(cmd, &f.readEnabled, "read-enabled", "allow pulls")
	optionalBoolFlag(cmd, &f.listEnabled, "list-enabled", "show in listings")
	if teleport {
		optionalBoolFlag(cmd, &f.teleportEnabled, "teleport-enabled", "legacy Teleport: stream every pushed image; the same as artifact-streaming update --enable-streaming")
	}
}

// patch is the PATCH body: only the attributes given.
func (f *attributeFlags) patch() map[string]bool {
	out := map[string]bool{}
	for name, v := range map[string]*bool{"deleteEnabled": f.deleteEnabled, "writeEnabled": f.writeEnabled,
		"readEnabled": f.readEnabled, "listEnabled": f.listEnabled, "teleportEnabled": f.teleportEnabled} {
		if v != nil {
			out[name] = *v
		}
	}
	return out
}

// imageTarget is --repository or --image of the repository commands.
type imageTarget struct{ repo, image string }

func (t *imageTarget) define(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.repo, "repository", "", "the repository")
	cmd.Flags().StringVarP(&t.image, "image", "t", "", "an image: REPOSITORY:TAG or REPOSITORY@DIGEST")
	cmd.MarkFlagsMutuallyExclusive("repository", "image")
	cmd.MarkFlagsOneRequired("repository", "image")
}

// path is the management path of the repository, or of the image's tag
// or manifest; key is the field of the answer holding the image's object.
func (t *imageTarget) path() (path, key string, err error) {
	if t.repo != "" {
		return "/acr/v1/" + t.repo, "", nil
	}
	img, err := parseImage(t.image)
	if err != nil {
		return "", "", err
	}
	if img.Digest != "" {
		return "/acr/v1/" + img.Repository + "/_manifests/" + img.Digest, "manifest", nil
	}
	return "/acr/v1/" + img.Repository + "/_tags/" + img.Tag, "tag", nil
}

var repositoryTable = columns("", [2]string{"ImageName", "imageName"}, [2]string{"ManifestCount", "manifestCount"},
	[2]string{"TagCount", "tagCount"}, [2]string{"Size", "size"}, [2]string{"TeleportEnabled", "changeableAttributes.teleportEnabled"},
	[2]string{"WriteEnabled", "changeableAttributes.writeEnabled"}, [2]string{"LastUpdateTime", "lastUpdateTime"})

func (a *App) newRepositoryCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "repository",
		Short:   "List, show, change and delete repositories and images",
		Example: "  sluice repository list -o table\n  sluice repository show --repository team/app -o jsonc",
	}
	cmd.AddCommand(a.newRepositoryListCmd(), a.newRepositoryShowCmd(), a.newRepositoryUpdateCmd(),
		a.newRepositoryDeleteCmd(), a.newRepositoryListDeletedCmd())
	return cmd
}

func (a *App) newRepositoryListCmd() *cobra.Command {
	var top int
	var teleport *bool
	cmd := &cobra.Command{
		Use:   "list [--top N] [--teleport-enabled]",
		Short: "List the repositories you may read",
		Example: `  sluice repository list
  sluice repository list --teleport-enabled -o tsv`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			reg, err := a.registry()
			if err != nil {
				return err
			}
			cl := a.Client(ctx, reg)
			names, err := listPages(ctx, cl, "/acr/v1/_catalog", "repositories", top)
			if err != nil {
				return err
			}
			if teleport != nil {
				names, err = filterTeleport(ctx, cl, names, *teleport)
				if err != nil {
					return err
				}
			}
			return a.print(names, nil)
		},
	}
	a.registryNameFlag(cmd)
	cmd.Flags().IntVar(&top, "top", 0, "list at most this many")
	optionalBoolFlag(cmd, &teleport, "teleport-enabled", "only the repositories whose teleportEnabled (auto-streaming) is true or false")
	return cmd
}

// listPages collects the list under key from a paginated endpoint,
// following Link headers, up to top items (0: all).
func listPages(ctx context.Context, cl *client.Client, path, key string, top int) ([]any, error) {
	out := []any{}
	q := url.Values{}
	if top > 0 {
		q.Set("n", strconv.Itoa(min(top, 1000)))
	}
	for path != "" {
		b, hdr, err := cl.API(ctx, "GET", path, q, nil)
		if err != nil {
			return nil, err
		}
		var page map[string]json.RawMessage
		if err := json.Unmarshal(b, &page); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		var items []any
		if err := json.Unmarshal(page[key], &items); err != nil && page[key] != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, items...)
		if top > 0 && len(out) >= top {
			return out[:top], nil
		}
		path, q = client.NextLink(hdr), nil
	}
	return out, nil
}

// filterTeleport keeps the repositories whose teleportEnabled is want.
func filterTeleport(ctx context.Context, cl *client.Client, names []any, want bool) ([]any, error) {
	out := []any{}
	for _, n := range names {
		name, _ := n.(string)
		b, _, err := cl.API(ctx, "GET", "/acr/v1/"+name, nil, nil)
		if err != nil {
			return nil, err
		}
		var r struct {
			ChangeableAttributes struct {
				TeleportEnabled bool `json:"teleportEnabled"`
			} `json:"changeableAttributes"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, err
		}
		if r.ChangeableAttributes.TeleportEnabled == want {
			out = append(out, name)
		}
	}
	return out, nil
}

// showImageObject prints the repository, or the image's tag or manifest
// object (the inner object, as az shows it).
func (a *App) showImageObject(ctx context.Context, method string, t *imageTarget, body any) error {
	path, key, err := t.path()
	if err != nil {
		return err
	}
	table := repositoryTable
	if key != "" {
		table = nil
	}
	return a.call(ctx, method, path, body, key, table)
}

func (a *App) newRepositoryShowCmd() *cobra.Command {
	var t imageTarget
	cmd := &cobra.Command{
		Use:   "show (--repository REPOSITORY | --image REPOSITORY:TAG)",
		Short: "Show a repository's counts and attributes, or an image's",
		Example: `  sluice repository show --repository team/app -o jsonc
  sluice repository show --image team/app:1.0
  sluice repository show --repository team/app --query changeableAttributes.teleportEnabled -o tsv`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.showImageObject(cmd.Context(), "GET", &t, nil)
		},
	}
	a.registryNameFlag(cmd)
	t.define(cmd)
	return cmd
}

func (a *App) newRepositoryUpdateCmd() *cobra.Command {
	var t imageTarget
	var f attributeFlags
	cmd := &cobra.Command{
		Use:   "update (--repository REPOSITORY | --image REPOSITORY:TAG) [--write-enabled true|false]...",
		Short: "Change the attributes of a repository or an image",
		Long: `Update sets changeable attributes: --delete-enabled, --write-enabled,
--read-enabled, --list-enabled, and for a repository --teleport-enabled
(auto-streaming, for old Teleport scripts). The registry enforces them: a
repository with write-enabled false refuses pushes.`,
		Example: `  sluice repository update --repository team/app --write-enabled false
  sluice repository update --repository team/app --teleport-enabled true
  sluice repository update --image team/app:1.0 --delete-enabled false`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := f.patch()
			if t.image != "" && f.teleportEnabled != nil {
				return usageErrorf("--teleport-enabled is a repository's attribute: use --repository")
			}
			if len(body) == 0 {
				return usageErrorf("give an attribute to change, e.g. --write-enabled false")
			}
			return a.showImageObject(cmd.Context(), "PATCH", &t, body)
		},
	}
	a.registryNameFlag(cmd)
	t.define(cmd)
	f.define(cmd, true)
	return cmd
}

func (a *App) newRepositoryDeleteCmd() *cobra.Command {
	var t imageTarget
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete (--repository REPOSITORY | --image REPOSITORY:TAG) [--yes]",
		Short: "Delete a repository, or an image with all its tags",
		Long: `Delete removes a whole repository, or an image (the manifest a tag or
digest names, with every tag pointing at it and its streaming artifacts).
It asks first on a terminal; --yes skips the question.`,
		Example: `  sluice repository delete --repository team/old --yes
  sluice repository delete --image team/app:0.9 --yes`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			what := "repository " + t.repo
			if t.image != "" {
				what = "image " + t.image + " and every tag of it"
			}
			if err := a.confirm(yes, "Delete "+what+"?"); err != nil {
				return err
			}
			reg, err := a.registry()
			if err != nil {
				return err
			}
			if t.repo != "" {
				return a.callOn(ctx, reg, "DELETE", "/acr/v1/"+t.repo, nil, "", nil)
			}
			return a.deleteImage(ctx, a.Client(ctx, reg), t.image)
		},
	}
	a.registryNameFlag(cmd)
	t.define(cmd)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

// deleteImage deletes the manifest an image names (by digest, so that
// every tag of it goes).
func (a *App) deleteImage(ctx context.Context, cl *client.Client, image string) error {
	img, err := parseImage(image)
	if err != nil {
		return err
	}
	d, err := cl.Resolve(ctx, img.Repository, img.Reference())
	if err != nil {
		return err
	}
	_, _, err = cl.API(ctx, "DELETE", "/v2/"+img.Repository+"/manifests/"+d.Digest.String(), nil, nil)
	return err
}

func (a *App) newRepositoryListDeletedCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list-deleted",
		Short: "List deleted repositories that soft delete keeps restorable",
		Example: `  sluice repository list-deleted -o table
  sluice manifest list-deleted -n team/app   # then restore its manifests`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd.Context(), "GET", "/acr/v1/_deleted/_catalog", nil, "repositories", nil)
		},
	}
	a.registryNameFlag(cmd)
	return cmd
}

func (a *App) newTagCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "tag",
		Short:   "List the tags of a repository",
		Example: "  sluice tag list --repository team/app",
	}
	var repo string
	var top int
	var detail bool
	list := &cobra.Command{
		Use:   "list --repository REPOSITORY [--detail] [--top N]",
		Short: "List a repository's tags (names, or with --detail their digests and attributes)",
		Example: `  sluice tag list --repository team/app
  sluice tag list --repository team/app --detail -o table`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			reg, err := a.registry()
			if err != nil {
				return err
			}
			tags, err := listPages(ctx, a.Client(ctx, reg), "/acr/v1/"+repo+"/_tags", "tags", top)
			if err != nil {
				return err
			}
			if detail {
				return a.print(tags, columns("", [2]string{"Name", "name"}, [2]string{"Digest", "digest"},
					[2]string{"LastUpdateTime", "lastUpdateTime"}, [2]string{"WriteEnabled", "changeableAttributes.writeEnabled"}))
			}
			names := make([]any, len(tags))
			for i, t := range tags {
				names[i] = field(t, "name")
			}
			return a.print(names, nil)
		},
	}
	a.registryNameFlag(list)
	list.Flags().StringVar(&repo, "repository", "", "the repository")
	list.Flags().IntVar(&top, "top", 0, "list at most this many")
	list.Flags().BoolVar(&detail, "detail", false, "show each tag's digest, times and attributes")
	_ = list.MarkFlagRequired("repository")
	cmd.AddCommand(list)
	return cmd
}
