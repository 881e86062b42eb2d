package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/client"
)

// registryNameFlag gives cmd az's --name/-n for the registry, an
// alternative to --registry/-r.
func (a *App) registryNameFlag(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&a.flags.registryName, "name", "n", "", "the registry (same as --registry)")
	_ = cmd.RegisterFlagCompletionFunc("name", a.completeRegistries)
}

// operationTable is the table of an operation.
var operationTable = columns("", [2]string{"Id", "id"}, [2]string{"Name", "name"}, [2]string{"Status", "status"},
	[2]string{"Progress", "progress"}, [2]string{"Resource", "resource"}, [2]string{"StartTime", "startTime"})

func (a *App) newStreamingCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "artifact-streaming",
		Short: "Create streaming artifacts, turn auto-streaming on or off, follow conversions",
		Long: `A streaming artifact is a seekable copy of an image stored beside it as an
OCI referrer; nodes running sluice-snapshotter start containers from it
before the image is downloaded. Conversions run in the registry as
operations that these commands start, follow and cancel.`,
		Example: `  sluice artifact-streaming create --image team/app:1.0
  sluice artifact-streaming update --repository team/app --enable-streaming true
  sluice artifact-streaming operation show --image team/app:1.0`,
	}
	op := &cobra.Command{
		Use:     "operation",
		Short:   "Follow or cancel conversions",
		Example: "  sluice artifact-streaming operation show --repository team/app --id 6f0c...",
	}
	op.AddCommand(a.newOperationShowCmd(), a.newOperationCancelCmd())
	cmd.AddCommand(a.newStreamingCreateCmd(), a.newStreamingShowCmd(), a.newStreamingUpdateCmd(), op)
	return cmd
}

func (a *App) newStreamingCreateCmd() *cobra.Command {
	var image string
	var noWait bool
	cmd := &cobra.Command{
		Use:   "create --image REPOSITORY:TAG [--no-wait]",
		Short: "Convert an image into its streaming artifact",
		Long: `Create starts the conversion of an image (every Linux platform of an index)
and waits for it, with a progress bar on a terminal; the output is the
final operation. An image that already has a streaming artifact is not
converted again, and a conversion already running is joined rather than
started twice. Ctrl-C stops waiting, not the conversion.`,
		Example: `  sluice artifact-streaming create --image team/app:1.0
  sluice artifact-streaming create -n myregistry --image team/app@sha256:9b2c... --no-wait --query id -o tsv`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.streamingCreate(cmd.Context(), image, noWait)
		},
	}
	a.registryNameFlag(cmd)
	cmd.Flags().StringVarP(&image, "image", "t", "", "the image: REPOSITORY:TAG or REPOSITORY@DIGEST")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the conversion is queued")
	_ = cmd.MarkFlagRequired("image")
	return cmd
}

func (a *App) streamingCreate(ctx context.Context, image string, noWait bool) error {
	img, err := parseImage(image)
	if err != nil {
		return err
	}
	return a.startOperation(ctx, longOperation{path: "/acr/v1/" + img.Repository + "/_streaming/" + img.Reference(),
		repo: img.Repository, what: "converting " + img.String(), label: "Converting", noWait: noWait})
}

func (a *App) newStreamingShowCmd() *cobra.Command {
	var repo string
	cmd := &cobra.Command{
		Use:     "show --repository REPOSITORY",
		Short:   "Show whether a repository converts every pushed image",
		Example: "  sluice artifact-streaming show --repository team/app\n  sluice artifact-streaming show --repository team/app --query convertPushedImages -o tsv",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd.Context(), "GET", "/acr/v1/"+repo+"/_streaming", nil, "", nil)
		},
	}
	a.registryNameFlag(cmd)
	cmd.Flags().StringVar(&repo, "repository", "", "the repository")
	_ = cmd.MarkFlagRequired("repository")
	return cmd
}

func (a *App) newStreamingUpdateCmd() *cobra.Command {
	var repo string
	var enable *bool
	var existing, noWait bool
	cmd := &cobra.Command{
		Use:   "update --repository REPOSITORY --enable-streaming true|false [--convert-existing] [--no-wait]",
		Short: "Turn auto-streaming of a repository on or off",
		Long: `With auto-streaming on, every image pushed or imported into the repository
is converted; a repository can be set up before its first push. Turning it
off stops new conversions; existing streaming artifacts stay.

--convert-existing also converts the images the repository's tags point at
now, one conversion per image (an image that already streams is not
converted again; artifacts are skipped), and waits for them with a progress
bar on a terminal unless --no-wait. The answer lists the operations.`,
		Example: `  sluice artifact-streaming update --repository team/app --enable-streaming true
  sluice artifact-streaming update --repository team/app --enable-streaming true --convert-existing`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if enable == nil {
				return usageErrorf("give --enable-streaming true or false")
			}
			body := map[string]bool{"convertPushedImages": *enable}
			if !existing {
				return a.call(cmd.Context(), "POST", "/acr/v1/"+repo+"/_streaming", body, "", nil)
			}
			body["convertExistingImages"] = true
			return a.convertExisting(cmd.Context(), repo, body, noWait)
		},
	}
	a.registryNameFlag(cmd)
	cmd.Flags().StringVar(&repo, "repository", "", "the repository")
	optionalBoolFlag(cmd, &enable, "enable-streaming", "convert every image pushed to the repository")
	cmd.Flags().BoolVar(&existing, "convert-existing", false, "also convert the images the repository's tags point at now")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "with --convert-existing: return once the conversions are queued")
	_ = cmd.MarkFlagRequired("repository")
	return cmd
}

// convertExisting turns auto-streaming on with convertExistingImages, then
// follows each conversion it started, one after the other, and prints the
// settings with the operations as they ended.
func (a *App) convertExisting(ctx context.Context, repo string, body any, noWait bool) error {
	reg, err := a.registry()
	if err != nil {
		return err
	}
	cl := a.Client(ctx, reg)
	b, _, err := cl.API(ctx, "POST", "/acr/v1/"+repo+"/_streaming", nil, body)
	if err != nil {
		return err
	}
	var answer map[string]any
	var ops struct {
		Operations []json.RawMessage `json:"operations"`
	}
	if err := json.Unmarshal(b, &answer); err != nil {
		return err
	}
	if err := json.Unmarshal(b, &ops); err != nil {
		return err
	}
	var failed []error
	for i, raw := range ops.Operations {
		var op operation
		if err := json.Unmarshal(raw, &op); err != nil {
			return err
		}
		final := raw
		if op.active() && !noWait {
			hints := a.operationHints(reg, repo, op.ID, fmt.Sprintf("Converting %d/%d", i+1, len(ops.Operations)))
			if final, err = a.waitOperation(ctx, cl, operationPath(repo, op.ID), raw, hints); err != nil {
				return err
			}
		}
		var v any
		if err := json.Unmarshal(final, &v); err != nil {
			return err
		}
		answer["operations"].([]any)[i] = v
		if err := operationError(final); err != nil {
			failed = append(failed, err)
		}
	}
	if noWait && len(ops.Operations) > 0 {
		a.hint("Queued %d conversions. Follow one with: sluice artifact-streaming operation show -r %s --repository %s --id ID", len(ops.Operations), reg.Name, repo)
	}
	if err := a.print(answer, nil); err != nil {
		return err
	}
	return errors.Join(failed...)
}

// operationTarget is how operation show and cancel name an operation:
// --image, or --repository with --id (--id alone: an import).
type operationTarget struct {
	image, repo, id string
	// latest finds the image's most recent conversion, even a finished
	// one (show), not only a queued or running one (cancel).
	latest bool
}

func (t *operationTarget) flags(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&t.image, "image", "t", "", "the image whose conversion it is: REPOSITORY:TAG or REPOSITORY@DIGEST")
	cmd.Flags().StringVar(&t.repo, "repository", "", "the repository of the operation")
	cmd.Flags().StringVar(&t.id, "id", "", "the operation's id")
	cmd.MarkFlagsMutuallyExclusive("image", "repository")
	cmd.MarkFlagsMutuallyExclusive("image", "id")
}

// find returns the operation's path below the registry and its JSON (when
// looked up by image).
func (a *App) findOperation(ctx context.Context, cl *client.Client, t *operationTarget) (string, json.RawMessage, error) {
	switch {
	case t.image != "":
		img, err := parseImage(t.image)
		if err != nil {
			return "", nil, err
		}
		path := "/acr/v1/" + img.Repository + "/_streaming/" + img.Reference()
		if t.latest {
			path += "?latest=true"
		}
		b, _, err := cl.API(ctx, "GET", path, nil, nil)
		var ce *client.Error
		if errors.As(err, &ce) && ce.Code == "OPERATION_UNKNOWN" {
			if t.latest {
				return "", nil, &explainedError{fmt.Sprintf("the registry has no conversion of %s on record; start one with 'sluice artifact-streaming create --image %s' (an artifact pushed by 'sluice convert' has none: see 'sluice manifest list-referrers -n %s')", img, img, img), err}
			}
			return "", nil, &explainedError{fmt.Sprintf("no conversion of %s is queued or running; a finished one is shown by 'sluice artifact-streaming operation show --image %s', and the artifact by 'sluice manifest list-referrers -n %s'", img, img, img), err}
		}
		if err != nil {
			return "", nil, err
		}
		var op operation
		if err := json.Unmarshal(b, &op); err != nil {
			return "", nil, err
		}
		return operationPath(img.Repository, op.ID), b, nil
	case t.id == "":
		return "", nil, usageErrorf("name the operation: --image REPOSITORY:TAG, or --repository REPOSITORY --id ID")
	}
	return operationPath(t.repo, t.id), nil, nil
}

func (a *App) newOperationShowCmd() *cobra.Command {
	return a.newOperationCmd(true, &cobra.Command{
		Use:   "show (--image REPOSITORY:TAG | --repository REPOSITORY --id ID)",
		Short: "Show a conversion (or, with --id alone, an import)",
		Example: `  sluice artifact-streaming operation show --image team/app:1.0
  sluice artifact-streaming operation show --repository team/app --id 6f0c... --query status -o tsv`,
	}, func(ctx context.Context, cl *client.Client, path string, found json.RawMessage) error {
		if found == nil {
			b, _, err := cl.API(ctx, "GET", path, nil, nil)
			if err != nil {
				return err
			}
			found = b
		}
		return a.print(found, operationTable)
	})
}

func (a *App) newOperationCancelCmd() *cobra.Command {
	return a.newOperationCmd(false, &cobra.Command{
		Use:   "cancel (--repository REPOSITORY --id ID | --image REPOSITORY:TAG)",
		Short: "Cancel a conversion (or, with --id alone, an import)",
		Long: `Cancel stops a queued or running conversion promptly; the registry removes
what it had written. An operation that already finished is left as it is.`,
		Example: `  sluice artifact-streaming operation cancel --repository team/app --id 6f0c...
  sluice artifact-streaming operation cancel --image team/app:1.0`,
	}, func(ctx context.Context, cl *client.Client, path string, _ json.RawMessage) error {
		b, _, err := cl.API(ctx, "POST", path+":cancel", nil, nil)
		if err != nil {
			return err
		}
		var op operation
		if json.Unmarshal(b, &op) == nil && op.Status != "Canceled" {
			a.warn("operation %s had already finished (%s); nothing was canceled", op.ID, op.Status)
		}
		return a.print(json.RawMessage(b), operationTable)
	})
}

// newOperationCmd completes an operation command: its flags, and a RunE
// that finds the operation (by image: the latest one, or only a queued or
// running one) and hands it to act.
func (a *App) newOperationCmd(latest bool, cmd *cobra.Command, act func(ctx context.Context, cl *client.Client, path string, found json.RawMessage) error) *cobra.Command {
	t := operationTarget{latest: latest}
	cmd.Args = noArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		reg, err := a.registry()
		if err != nil {
			return err
		}
		cl := a.Client(ctx, reg)
		path, found, err := a.findOperation(ctx, cl, &t)
		if err != nil {
			return err
		}
		return act(ctx, cl, path, found)
	}
	a.registryNameFlag(cmd)
	t.flags(cmd)
	return cmd
}
