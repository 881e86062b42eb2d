// Command sluice-snapshotter is Sluice's node daemon: a containerd proxy
// snapshotter that mounts streamed layers lazily over FUSE and falls back
// to ordinary overlay snapshots for everything else.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/snapshotter"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-snapshotter:", err)
		os.Exit(1)
	}
}

type flags struct {
	configFile string
	root       string
	address    string
	logLevel   string
}

func newRootCommand() *cobra.Command {
	var f flags
	run := func(cmd *cobra.Command, _ []string) error { return serve(cmd, &f) }
	root := &cobra.Command{
		Use:   "sluice-snapshotter",
		Short: "Containerd snapshotter that streams Sluice images lazily",
		Long: `sluice-snapshotter serves containerd's snapshots API on a unix socket. Layers
of images that have a streaming artifact are mounted lazily over FUSE (only
the chunks a container reads are fetched, verified, and cached); everything
else gets ordinary overlay snapshots. The FUSE mounts belong to a separate,
long-lived manager process, so restarting the snapshotter never disturbs
running containers.`,
		Example: `  # Write containerd's configuration and a systemd unit, then start
  sluice-snapshotter install && systemctl restart containerd && systemctl start sluice-snapshotter

  # Run in the foreground with a config file (Ctrl-C stops it; its FUSE
  # manager and the mounts stay for running containers)
  sluice-snapshotter --config /etc/sluice/snapshotter.yaml

  # Stop it and its FUSE manager, unmounting every streamed layer
  sluice-snapshotter stop --config /etc/sluice/snapshotter.yaml`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE:          run,
	}
	addFlags(root, &f)
	serveCmd := &cobra.Command{Use: "serve", Short: "Run the snapshotter (the default command)", Args: cobra.NoArgs, RunE: run,
		Example: "  sluice-snapshotter serve --root /var/lib/sluice-snapshotter --address /run/sluice-snapshotter/sluice.sock"}
	addFlags(serveCmd, &f)
	root.AddCommand(serveCmd, newFuseManagerCommand(), newInstallCommand(), newTrustCommand(), newStopCommand())
	return root
}

func addFlags(cmd *cobra.Command, f *flags) {
	cmd.Flags().StringVar(&f.configFile, "config", "", "YAML configuration file")
	cmd.Flags().StringVar(&f.root, "root", "", "state directory (default "+snapshotter.DefaultRoot+")")
	cmd.Flags().StringVar(&f.address, "address", "", "unix socket for containerd (default "+snapshotter.DefaultAddress+")")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
}

func (f *flags) config() (snapshotter.Config, error) {
	cfg, err := snapshotter.LoadConfig(f.configFile)
	if err != nil {
		return cfg, err
	}
	if f.root != "" {
		cfg.Root = f.root
	}
	if f.address != "" {
		cfg.Address = f.address
	}
	return cfg, nil
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
