package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/snapshotter"
)

func newInstallCommand() *cobra.Command {
	o := snapshotter.InstallOptions{Name: "sluice"}
	var noUnit, noCRI bool
	var criListen string
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Write containerd's configuration and a systemd unit",
		Long: `Add the snapshotter to containerd's config.toml as the proxy plugin "sluice"
(version 2 for containerd 1.6 and 1.7, version 3 for containerd 2.x, detected
from the file or from containerd --version), make it CRI's snapshotter with
the snapshot labels on, and write a systemd unit. Everything else in the file
is kept; running install again changes nothing. Restart containerd after.`,
		Example: `  sluice-snapshotter install
  systemctl daemon-reload && systemctl enable --now sluice-snapshotter && systemctl restart containerd

  # Only the containerd configuration, for containerd 2.x
  sluice-snapshotter install --no-systemd --config-version 3 --containerd-config /etc/containerd/config.toml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Binary == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				o.Binary = exe
			}
			o.CRIDefault = !noCRI
			changed, err := snapshotter.InstallContainerdConfig(o)
			if err != nil {
				return err
			}
			report(cmd, o.ContainerdConfig, changed)
			if !noCRI {
				fmt.Fprint(cmd.OutOrStdout(), snapshotter.KubeletSetting(criListen))
			}
			if !noUnit {
				changed, err := snapshotter.InstallSystemdUnit(o)
				if err != nil {
					return err
				}
				report(cmd, o.SystemdUnit, changed)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ContainerdConfig, "containerd-config", "/etc/containerd/config.toml", "containerd's configuration file")
	f.IntVar(&o.ConfigVersion, "config-version", 0, "containerd config version, 2 or 3 (default: detect)")
	f.StringVar(&o.Address, "address", snapshotter.DefaultAddress, "the snapshotter's socket")
	f.StringVar(&o.Root, "root", snapshotter.DefaultRoot, "the snapshotter's state directory")
	f.StringVar(&o.SystemdUnit, "systemd-unit", "/etc/systemd/system/sluice-snapshotter.service", "unit file to write")
	f.StringVar(&o.Binary, "binary", "", "the snapshotter executable in the unit (default: this one)")
	f.StringVar(&o.ConfigFile, "config", "", "configuration file the unit passes with --config")
	f.BoolVar(&noUnit, "no-systemd", false, "do not write a systemd unit")
	f.BoolVar(&noCRI, "no-cri", false, "do not make sluice CRI's snapshotter")
	f.StringVar(&criListen, "cri-listen", snapshotter.DefaultCRIListen, "the CRI proxy's socket (criProxy.listen) kubelet's image service setting names")
	return cmd
}

func report(cmd *cobra.Command, path string, changed bool) {
	if changed {
		fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", path)
	} else {
		fmt.Fprintf(cmd.OutOrStdout(), "%s already up to date\n", path)
	}
}
