// Command sluiced is the Sluice registry: the OCI Distribution API on
// embedded storage (SQLite and a local directory by default).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/server"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sluiced:", err)
		os.Exit(1)
	}
}

// serveFlags are the command-line settings; each overrides the config file
// and the environment when given.
type serveFlags struct {
	configFile string
	listen     string
	data       string
	tlsCert    string
	tlsKey     string
	// databaseDSN is --database-dsn.
	databaseDSN string
}

func newRootCommand() *cobra.Command {
	var f serveFlags
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Run the registry (the default command)",
		Example: `  # Serve on 127.0.0.1:5000 with data in ./data
  sluiced serve

  # Serve on all interfaces with data in /var/lib/sluice
  sluiced serve --listen :5000 --data /var/lib/sluice

  # Settings from a file; SLUICE_* variables override it
  SLUICE_LOG_LEVEL=debug sluiced serve --config /etc/sluice/sluiced.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runServe(cmd, &f) },
	}
	addServeFlags(serve, &f)

	root := &cobra.Command{
		Use:           "sluiced",
		Short:         "Sluice registry: OCI distribution with artifact streaming",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE:          func(cmd *cobra.Command, _ []string) error { return runServe(cmd, &f) },
	}
	addServeFlags(root, &f)
	var wf serveFlags
	worker := &cobra.Command{
		Use:   "worker",
		Short: "Run only conversion and import workers, sharing the registry's stores",
		Long: `Run only the workers that take artifact streaming conversions and imports
from the queue in the metadata store. Start several, on this machine or others
sharing the same stores, to convert more images at once.`,
		Example: `  # Two more workers beside a sluiced serving ./data
  SLUICE_STREAMING_WORKERS=2 sluiced worker --data ./data

  # A worker on the shared backends, with /healthz, /readyz and /metrics on :9090
  sluiced worker --config /etc/sluice/sluiced.yaml --listen :9090`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runWorker(cmd, &wf) },
	}
	addServeFlags(worker, &wf)
	var kf serveFlags
	rotate := &cobra.Command{
		Use:   "rotate-keys",
		Short: "Make a new signing key current",
		Long: `Generate a new signing key in the data directory and make it the one new
tokens and streaming artifacts are signed with. The old key signs an
endorsement of the new one, so nodes that pinned the old key trust the new
one without being told. Tokens signed with older keys stay valid until they
expire, and artifacts signed with them stay trusted while their keys are
published (every key is). Replicas sharing the data directory pick the new
key up when they first see something signed with it, and sign with it after
a restart; on PostgreSQL, where the keys are in the database, they are told
and sign with it at once.`,
		Example: `  sluiced rotate-keys --data /var/lib/sluice`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, &kf)
			if err != nil {
				return err
			}
			if err := cfg.ResolvePaths(); err != nil {
				return err
			}
			var keys *auth.KeyRing
			var announce func() error
			if cfg.Database.Driver == "postgres" {
				// The replicas' keys are in the database; they are told
				// of the rotation and sign with the new key at once.
				meta, err := metadata.OpenPostgres(cmd.Context(), cfg.Database.DSN)
				if err != nil {
					return err
				}
				defer meta.Close()
				if keys, err = server.OpenKeys(cmd.Context(), cfg, meta); err != nil {
					return err
				}
				announce = func() error { return meta.Notify(cmd.Context(), server.SigningKeysTopic) }
			} else {
				// Only the key directory: opening the registry would
				// migrate its database and, on a fresh one, create the
				// admin user.
				if _, err := os.Stat(cfg.Data); err != nil {
					return fmt.Errorf("data directory %s: %w (rotate-keys works on the data directory of a registry that has run)", cfg.Data, err)
				}
				if keys, err = auth.OpenKeyRing(cfg.KeyDir()); err != nil {
					return fmt.Errorf("signing keys in %s: %w", cfg.KeyDir(), err)
				}
			}
			kid, err := keys.Rotate()
			if err != nil {
				return err
			}
			if announce != nil {
				if err := announce(); err != nil {
					return fmt.Errorf("new signing key %s made, but the replicas could not be told (they sign with it after a restart): %w", kid, err)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "new signing key %s, endorsed by the one before it; keys kept for verification and published: %v\n", kid, keys.IDs())
			return nil
		},
	}
	addServeFlags(rotate, &kf)
	root.AddCommand(serve, worker, rotate, newMigrateCommand())
	return root
}

func addServeFlags(cmd *cobra.Command, f *serveFlags) {
	def := config.Default()
	cmd.Flags().StringVar(&f.configFile, "config", "", "YAML configuration file")
	cmd.Flags().StringVar(&f.listen, "listen", def.Listen, "address to serve on (SLUICE_LISTEN)")
	cmd.Flags().StringVar(&f.data, "data", def.Data, "data directory for the embedded stores (SLUICE_DATA)")
	cmd.Flags().StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate: serve HTTPS (SLUICE_TLS_CERT)")
	cmd.Flags().StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert (SLUICE_TLS_KEY)")
	cmd.Flags().StringVar(&f.databaseDSN, "database-dsn", "", "metadata database: the SQLite file, or with database.driver postgres its URL (SLUICE_DATABASE_DSN)")
}

func loadConfig(cmd *cobra.Command, f *serveFlags) (config.Config, error) {
	// Flags win over the file and the environment, and the settings are
	// checked once all three are in.
	return config.Load(f.configFile, os.Environ(), func(cfg *config.Config) {
		if cmd.Flags().Changed("listen") {
			cfg.Listen = f.listen
		}
		if cmd.Flags().Changed("data") {
			cfg.Data = f.data
		}
		if cmd.Flags().Changed("tls-cert") {
			cfg.TLS.Cert = f.tlsCert
		}
		if cmd.Flags().Changed("tls-key") {
			cfg.TLS.Key = f.tlsKey
		}
		if cmd.Flags().Changed("database-dsn") {
			cfg.Database.DSN = f.databaseDSN
		}
	})
}

func newLogger(cfg config.Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// setUp loads the configuration and makes its logger the default.
func setUp(cmd *cobra.Command, f *serveFlags) (config.Config, *slog.Logger, error) {
	cfg, err := loadConfig(cmd, f)
	if err != nil {
		return cfg, nil, err
	}
	log := newLogger(cfg)
	slog.SetDefault(log)
	return cfg, log, nil
}

func runServe(cmd *cobra.Command, f *serveFlags) error {
	cfg, log, err := setUp(cmd, f)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Bind first: an address in use must fail before the data directory,
	// the database and a "shown once" admin password are made.
	ln, err := listen(cfg.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	return srv.Serve(ctx, ln)
}

// listen opens the registry's TCP listener. Its error names the address
// once ("listen 127.0.0.1:5000: address already in use"), not as net's
// does ("listen tcp 127.0.0.1:5000: bind: address already in use").
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		err = opErr.Err
	}
	var sysErr *os.SyscallError
	if errors.As(err, &sysErr) {
		err = sysErr.Err
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("listen %s: %w; stop what serves there, or choose another address with --listen or SLUICE_LISTEN", addr, err)
	}
	return nil, fmt.Errorf("listen %s: %w", addr, err)
}

func runWorker(cmd *cobra.Command, f *serveFlags) error {
	cfg, log, err := setUp(cmd, f)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.Streaming.Workers < 1 {
		return errors.New("streaming.workers is 0: a worker needs at least 1 (SLUICE_STREAMING_WORKERS)")
	}
	// Probes and metrics only where --listen says: the worker's default
	// address would be the registry's.
	var ln net.Listener
	if cmd.Flags().Changed("listen") {
		if ln, err = listen(cfg.Listen); err != nil {
			return err
		}
		defer ln.Close()
	}
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	return srv.RunWorkers(ctx, ln)
}
