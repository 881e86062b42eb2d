package main

import (
	"context"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/fusemanager"
	"github.com/sluicehq/sluice/internal/snapshotter"
)

// gcBallastBytes is a heap allocation the FUSE manager holds and never
// touches. Go starts collecting at a 4 MB heap and doubles from there, so
// mounting the first layer (decoding its TOC, verifying its startup
// profile: some 30 MB for python3) ran four collections in 100 ms whose
// mark assists fell on the TOC decode, on the critical path of a container
// start. With the ballast counted in the heap the first collection waits
// until 128 MiB. The kernel maps its pages only when touched, so the
// ballast itself is not resident; what it costs is up to 64 MiB more
// garbage between collections, next to a memory front of 256 MiB by
// default.
const gcBallastBytes = 64 << 20

func newFuseManagerCommand() *cobra.Command {
	var root, socket, configFile, logLevel, pullCredentials string
	cmd := &cobra.Command{
		Use:   "fuse-manager",
		Short: "Run the process that owns the FUSE mounts (started by the snapshotter)",
		Long: `The FUSE manager owns the streamed layers' FUSE mounts and serves their reads.
The snapshotter starts it on demand, in its own session, and talks to it over
a unix socket; it outlives snapshotter restarts so that running containers
keep working. After a reboot it mounts again what it had mounted, from TOCs
kept on local disk.`,
		Example: "  sluice-snapshotter fuse-manager --root /var/lib/sluice-snapshotter/fusemanager --socket /run/sluice-snapshotter/fuse-manager.sock",
		Hidden:  true,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ballast := make([]byte, gcBallastBytes)
			defer runtime.KeepAlive(ballast)
			cfg, err := snapshotter.LoadConfig(configFile)
			if err != nil {
				return err
			}
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			delay, _ := cfg.Background()
			// The credentials of CRI pulls, which the snapshotter keeps,
			// come first for their repositories (the file is read again
			// when the snapshotter writes it), then kubelet's credential
			// provider plugins.
			providers, err := snapshotter.LoadCredentialProviders(cfg.CredentialProviders)
			if err != nil {
				return err
			}
			var pulls snapshotter.RepositoryCredentials = (*snapshotter.PullCredentials)(nil)
			if pullCredentials != "" {
				pulls = snapshotter.OpenPullCredentials(pullCredentials, cfg.CRIProxy.KeyFile)
			}
			credential := snapshotter.ScopedCredential(log, snapshotter.ReloadingCredential(configFile, cfg, log), pulls, providers)
			m, err := fusemanager.New(fusemanager.Config{Root: root, CacheMaxBytes: cfg.CacheMaxBytes, CacheMemoryBytes: cfg.CacheMemoryBytes, Credential: credential,
				BackgroundDelay: delay, StartupProfiles: cfg.Profiles(), Limits: cfg.Limits.Streaming(), Log: log})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := m.Restore(ctx); err != nil {
				log.Warn("some mounts were not restored", "err", err)
			}
			log.Info("FUSE manager serving", "socket", socket, "root", root)
			err = m.Serve(ctx, socket)
			m.Close()
			return err
		},
	}
	cmd.Flags().StringVar(&root, "root", snapshotter.DefaultRoot+"/fusemanager", "state directory")
	cmd.Flags().StringVar(&socket, "socket", "/run/sluice-snapshotter/fuse-manager.sock", "unix socket of the API")
	cmd.Flags().StringVar(&configFile, "config", "", "the snapshotter's YAML configuration file")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&pullCredentials, "pull-credentials", "", "directory of the credentials kept from CRI pulls")
	return cmd
}
