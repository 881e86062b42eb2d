package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/internal/criproxy"
	"github.com/sluicehq/sluice/internal/fusemanager"
	"github.com/sluicehq/sluice/internal/nodestatus"
	"github.com/sluicehq/sluice/internal/snapshotter"
)

// managerSocket and managerRoot place the FUSE manager beside the snapshotter.
func managerSocket(cfg snapshotter.Config) string {
	return filepath.Join(filepath.Dir(cfg.Address), "fuse-manager.sock")
}

func managerRoot(cfg snapshotter.Config) string { return filepath.Join(cfg.Root, "fusemanager") }

func serve(cmd *cobra.Command, f *flags) error {
	cfg, err := f.config()
	if err != nil {
		return err
	}
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	args := []string{"fuse-manager", "--root", managerRoot(cfg), "--socket", managerSocket(cfg), "--log-level", f.logLevel,
		"--pull-credentials", snapshotter.PullCredentialsDir(cfg.Root)}
	if f.configFile != "" {
		abs, err := filepath.Abs(f.configFile)
		if err != nil {
			return err
		}
		args = append(args, "--config", abs)
	}
	layers, started, err := fusemanager.Ensure(ctx, managerSocket(cfg), filepath.Join(cfg.Root, "fuse-manager.log"), args...)
	if err != nil {
		return err
	}
	log.Info("FUSE manager ready", "socket", managerSocket(cfg), "started", started)

	metrics := snapshotter.NewMetrics()
	live := snapshotter.NewLiveConfig(f.configFile, cfg, log)
	for host, rc := range cfg.Registries {
		if rc.Trust == snapshotter.TrustAny {
			log.Warn("streaming artifacts of this registry are mounted without a signature (trust: any): "+
				"whoever may push them decides what containers run", "registry", host)
		}
	}
	trust := snapshotter.NewTrust(snapshotter.TrustDir(cfg.Root), func(host string) (string, []string) {
		c := live.Current()
		return c.TrustOf(host)
	}, log)
	pulls := snapshotter.OpenPullCredentials(snapshotter.PullCredentialsDir(cfg.Root), cfg.CRIProxy.KeyFile)
	providers, err := snapshotter.LoadCredentialProviders(cfg.CredentialProviders)
	if err != nil {
		return err
	}
	resolver := snapshotter.NewResolver(snapshotter.ScopedCredential(log, live.Credential, pulls, providers), cfg.PlainHTTP, trust, snapshotter.WithLimits(cfg.Limits))
	sn, err := snapshotter.New(filepath.Join(cfg.Root, "snapshotter"), layers, resolver, metrics, log)
	if err != nil {
		return err
	}
	defer sn.Close()
	sn.RecordStatus(nodestatus.Open(nodestatus.Path(cfg.Root)))
	if err := sn.Restore(ctx); err != nil {
		log.Warn("some streamed layers were not restored", "err", err)
	}

	if err := os.MkdirAll(filepath.Dir(cfg.Address), 0o711); err != nil {
		return err
	}
	if err := os.Remove(cfg.Address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ln, err := net.Listen("unix", cfg.Address)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Address, err)
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	errc := make(chan error, 3)
	go func() { errc <- srv.Serve(ln) }()
	if cfg.CRIProxy.Listen != "" {
		stopProxy, err := serveCRIProxy(cfg.CRIProxy, &snapshotter.PullRecorder{Credentials: pulls, Log: log, Changed: resolver.Forget},
			snapshotter.ImageStreamingInfo(nodestatus.Path(cfg.Root)), log, errc)
		if err != nil {
			srv.Stop()
			return err
		}
		defer stopProxy()
	}
	if cfg.MetricsAddress != "" {
		go func() { errc <- serveMetrics(ctx, cfg.MetricsAddress, metrics.Registry, layers) }()
	}
	if cfg.Unpack() {
		go sn.UnpackComplete(ctx, unpackInterval)
	}
	log.Info("sluice-snapshotter serving", "address", cfg.Address, "root", cfg.Root)
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	srv.GracefulStop()
	return err
}

// unpackInterval is how often the snapshotter looks for streamed layers
// the FUSE manager has completed.
const unpackInterval = 2 * time.Second

// serveCRIProxy serves the CRI proxy in front of containerd, adding how
// an image's layers are served to its verbose ImageStatus; the function it
// returns stops it.
func serveCRIProxy(c snapshotter.CRIProxyConfig, rec *snapshotter.PullRecorder, info criproxy.ImageInfo, log *slog.Logger, errc chan<- error) (func(), error) {
	px, err := criproxy.New(c.Upstream, rec.RecordPull, log)
	if err != nil {
		return nil, err
	}
	px.AddImageInfo(info)
	ln, err := criproxy.Listen(c.Listen)
	if err != nil {
		px.Close()
		return nil, err
	}
	srv := px.Server()
	go func() { errc <- srv.Serve(ln) }()
	log.Info("CRI proxy serving", "listen", c.Listen, "upstream", c.Upstream)
	return func() {
		// Not graceful: a container events stream lasts as long as
		// kubelet's connection.
		srv.Stop()
		px.Close()
	}, nil
}

// serveMetrics serves the snapshotter's metrics and the FUSE manager's on
// one endpoint.
func serveMetrics(ctx context.Context, addr string, own *prometheus.Registry, layers *fusemanager.Client) error {
	gatherers := prometheus.Gatherers{own, managerGatherer{layers}}
	srv := &http.Server{Addr: addr, Handler: promhttp.HandlerFor(gatherers, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}),
		ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// managerGatherer reads the FUSE manager's metrics over its socket.
type managerGatherer struct{ c *fusemanager.Client }

func (g managerGatherer) Gather() ([]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body, err := g.c.Metrics(ctx)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	// The zero TextParser has no name validation scheme and panics.
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(body)
	if err != nil {
		return nil, err
	}
	out := make([]*dto.MetricFamily, 0, len(families))
	for _, f := range families {
		out = append(out, f)
	}
	return out, nil
}
