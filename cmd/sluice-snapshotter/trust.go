package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/snapshotter"
	"github.com/sluicehq/sluice/internal/trust"
)

func newTrustCommand() *cobra.Command {
	var f flags
	var forget bool
	cmd := &cobra.Command{
		Use:   "trust HOST",
		Short: "Pin the signing keys a registry publishes now",
		Long: `A node mounts a registry's streaming artifacts only when they are signed by
a key it trusts. Under the default trust mode ("registry"), the node pins the
keys the registry publishes (/acr/v1/_keys) the first time it streams from it,
and afterwards follows the registry's key rotations (a new key endorsed by a
pinned one). A key set replaced wholesale (a reinstalled registry, or someone
answering in its place) is refused until this command pins it: check with the
registry's operator that the key ids it prints are the registry's.

The running snapshotter uses the new pins at its next lookup; an image that
failed to stream in the last minute is looked up again after that minute.`,
		Example: `  sluice-snapshotter trust registry.example.com
  sluice-snapshotter trust 127.0.0.1:5000 --config /etc/sluice/snapshotter.yaml
  sluice-snapshotter trust registry.example.com --forget   # pin again at next use`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			host := args[0]
			if strings.Contains(host, "/") {
				return fmt.Errorf("%q: give the registry as host[:port], without scheme or path", host)
			}
			dir := snapshotter.TrustDir(cfg.Root)
			out := cmd.OutOrStdout()
			old, oldErr := snapshotter.ReadPins(dir, host)
			if forget {
				if err := snapshotter.ForgetPins(dir, host); err != nil {
					return err
				}
				fmt.Fprintf(out, "forgot the keys pinned for %s; the next stream from it pins what it publishes then\n", host)
				return nil
			}
			if mode, _ := cfg.TrustOf(host); mode != snapshotter.TrustRegistry {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: %s is configured with trust: %s, which does not use pinned keys\n", host, mode)
			}
			c := client.New(host, client.Options{PlainHTTP: cfg.PlainHTTP(host), UserAgent: "sluice-snapshotter"})
			published, err := c.SigningKeys(cmd.Context())
			if err != nil {
				return err
			}
			keys, bad := published.KeySet()
			for _, e := range bad {
				fmt.Fprintf(cmd.ErrOrStderr(), "ignoring a published key: %v\n", e)
			}
			if len(keys) == 0 {
				return fmt.Errorf("%s publishes no usable signing keys at /acr/v1/_keys; nothing to trust", host)
			}
			var kept []trust.JWK
			for _, k := range published.Keys {
				if keys[k.Kid] != nil {
					kept = append(kept, k)
				}
			}
			if err := snapshotter.WritePins(dir, host, trust.JWKS{Keys: kept}); err != nil {
				return err
			}
			was := "nothing"
			if oldErr == nil {
				was = strings.Join(old.IDs(), ", ")
			}
			fmt.Fprintf(out, "trusted signing keys of %s: %s (pinned before: %s)\n", host, strings.Join(keys.IDs(), ", "), was)
			return nil
		},
	}
	addFlags(cmd, &f)
	cmd.Flags().BoolVar(&forget, "forget", false, "remove the registry's pins instead")
	return cmd
}
