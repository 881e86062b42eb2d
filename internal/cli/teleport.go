package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/client"
)

// The states check-expansion reports, in the words of the legacy script.
const (
	expansionReady     = "layers ready"
	expansionExpanding = "expanding layers"
	expansionDisabled  = "not enabled"
	// expansionMissing is Sluice's own: the repository streams, but this
	// image has no streaming artifact and none is being made.
	expansionMissing = "no streaming artifact yet"
)

func (a *App) newTeleportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "teleport",
		Short: "Legacy Teleport commands, for old scripts",
		Long: `Teleport was the managed registry's first streaming feature. Its switch is
a repository's teleportEnabled attribute (sluice repository update
--teleport-enabled true, the same as artifact-streaming update
--enable-streaming true) and its check is check-expansion.`,
		Example: "  sluice teleport check-expansion team/app 1.0",
	}
	var wait bool
	var timeout time.Duration
	check := &cobra.Command{
		Use:   "check-expansion REPOSITORY TAG [--wait]",
		Short: `Report whether an image's streaming layers are ready: "layers ready", "expanding layers", "no streaming artifact yet" or "not enabled"`,
		Long: `Check-expansion asks the registry's legacy endpoint /mount/v1 about the
image REPOSITORY:TAG and prints "layers ready" (its streaming artifact
exists, signed by the registry), "expanding layers" (its conversion is
queued or running) or "not enabled" (the repository does not stream), as
the old check-expansion.sh did, and "no streaming artifact yet" when the
repository streams but the image was pushed before that, or its conversion
failed (the details say how to convert it). With -o or --query it prints an object with the digest and details.
--wait polls while the layers are expanding.`,
		Example: `  sluice teleport check-expansion team/app 1.0
  sluice teleport check-expansion team/app 1.0 --wait --timeout 10m
  sluice teleport check-expansion team/app 1.0 -o json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			reg, err := a.registry()
			if err != nil {
				return err
			}
			cl := a.Client(ctx, reg)
			d, err := cl.Resolve(ctx, args[0], args[1])
			if err != nil {
				return err
			}
			res := map[string]any{"repository": args[0], "tag": args[1], "digest": d.Digest.String()}
			deadline := time.Now().Add(timeout)
			interval := pollFirst
			for {
				status, details, err := checkExpansion(ctx, cl, args[0], d.Digest.String())
				if err != nil {
					return err
				}
				res["status"], res["details"] = status, details
				if !wait || status != expansionExpanding || time.Now().After(deadline) {
					break
				}
				select {
				case <-ctx.Done():
					return errInterrupted
				case <-time.After(interval):
				}
				interval = min(interval*3/2, pollMax)
			}
			if a.flags.output == "" && a.flags.query == "" {
				_, err = fmt.Fprintln(a.Stdout, res["status"])
			} else {
				err = a.print(res, nil)
			}
			if err == nil && wait && res["status"] != expansionReady {
				err = fmt.Errorf("%s:%s: %s", args[0], args[1], res["status"])
			}
			return err
		},
	}
	check.Flags().BoolVar(&wait, "wait", false, "poll until the layers are no longer expanding")
	check.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "with --wait, give up after this long")
	cmd.AddCommand(check)
	return cmd
}

// checkExpansion asks /mount/v1: 200 ready, 409 expanding, 404 not
// expanded (the repository streams) or not enabled.
func checkExpansion(ctx context.Context, cl *client.Client, repo, dgst string) (status, details string, err error) {
	_, _, err = cl.API(ctx, "GET", "/mount/v1/"+repo+"/_manifests/"+dgst, nil, nil)
	var ce *client.Error
	switch {
	case err == nil:
		return expansionReady, "the streaming artifact exists", nil
	case !errors.As(err, &ce):
		return "", "", err
	case ce.Status == http.StatusConflict:
		return expansionExpanding, "the conversion is queued or running", nil
	case ce.Status == http.StatusNotFound && ce.Code == "NOT_EXPANDED":
		return expansionMissing, ce.Message, nil
	case ce.Status == http.StatusNotFound && ce.Code != "NAME_UNKNOWN" && ce.Code != "MANIFEST_UNKNOWN":
		return expansionDisabled, ce.Message, nil
	}
	return "", "", err
}

func (a *App) newShowUsageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show-usage",
		Short: "Show the storage the registry uses against its limit",
		Example: `  sluice show-usage -o table
  sluice show-usage --query "value[?name=='Size'].currentValue" -o tsv`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd.Context(), "GET", "/acr/v1/_usage", nil, "", columns("value", [2]string{"NAME", "name"},
				[2]string{"LIMIT", "limit"}, [2]string{"CURRENT VALUE", "currentValue"}, [2]string{"UNIT", "unit"}))
		},
	}
	a.registryNameFlag(cmd)
	return cmd
}
