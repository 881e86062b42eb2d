// Package server assembles sluiced: it opens the stores named by the
// configuration, builds the services, and serves the HTTP edge (/v2/,
// /healthz, /metrics) with request metrics and access logs.
package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/internal/api/distribution"
	"github.com/sluicehq/sluice/internal/api/mgmt"
	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/api/token"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/blobstore"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/conversion"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/portal"
	"github.com/sluicehq/sluice/internal/promreg"
	"github.com/sluicehq/sluice/internal/registry"
)

// Server is a configured sluiced.
type Server struct {
	cfg        config.Config
	log        *slog.Logger
	meta       *metadata.Store
	blobs      *blobstore.Store
	Registry   *registry.Registry
	Conversion *conversion.Service
	// Keys sign access tokens and streaming artifacts.
	Keys *auth.KeyRing
	// Auth is nil when authentication is turned off.
	Auth    *auth.Service
	handler http.Handler
	apis    []*route.API
	// promReg holds the process's metrics.
	promReg *prometheus.Registry
	// draining is set once a shutdown began: /readyz fails from then on.
	draining atomic.Bool
	// writable knows which stores take writes, for /healthz and the
	// sluice_store_writable gauge.
	writable *writability
}

// New opens the stores and builds the services and handlers.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*Server, error) {
	if err := cfg.ResolvePaths(); err != nil {
		return nil, err
	}
	meta, blobs, err := OpenStores(ctx, cfg)
	if err != nil {
		return nil, err
	}
	reg := registry.New(meta, blobs, registry.Options{
		GCInterval:    cfg.GC.Interval.Std(),
		GCGracePeriod: cfg.GC.GracePeriod.Std(),
		UploadTTL:     cfg.GC.UploadTTL.Std(),
		SoftDelete:    cfg.SoftDelete.Retention(),
		Redirect:      cfg.Storage.Redirect,
	}, log)
	keys, err := OpenKeys(ctx, cfg, meta)
	if err != nil {
		meta.Close()
		blobs.Close()
		return nil, err
	}
	// A rotation by another process (sluiced rotate-keys) is announced on
	// PostgreSQL: sign with the new key from then on.
	meta.Subscribe(ctx, func(topic string) {
		if topic != SigningKeysTopic && topic != "" {
			return
		}
		if err := keys.Reload(); err != nil {
			log.Warn("reload the signing keys after a rotation", "err", err)
		}
	})
	promReg := promreg.New("sluiced")
	conv := conversion.New(reg, meta, conversion.Options{Workers: cfg.Streaming.Workers, Lease: cfg.Streaming.Lease.Std(), Signer: keys, Metrics: promReg,
		Streaming: cfg.Streaming.ConverterOptions(), MemoryBudget: cfg.Streaming.MemoryBudget}, log)
	s := &Server{cfg: cfg, log: log, meta: meta, blobs: blobs, Registry: reg, Conversion: conv, Keys: keys, promReg: promReg}
	s.writable = newWritability(promReg, log,
		writableStore{name: registry.StoreMetadata, where: cmp.Or(meta.Path(), "the PostgreSQL database"), probe: meta.ProbeWrite},
		writableStore{name: registry.StoreBlobs, where: cmp.Or(blobs.Dir(), "the object store"), probe: blobs.ProbeWrite})
	// Before anything writes: a store that cannot is logged once, and the
	// start goes on to serve what it can.
	s.writable.probe(ctx)
	if cfg.Auth.Enabled {
		s.Auth, err = auth.NewService(ctx, meta, auth.Options{
			AdminUser: cfg.AdminUser, AdminPassword: cfg.AdminPassword, AnonymousPull: cfg.Auth.AnonymousPull,
			TokenTTL: cfg.Auth.TokenTTL.Std(), RefreshTTL: cfg.Auth.RefreshTTL.Std(),
			FailedLoginBurst: cfg.Auth.FailedLoginBurst, FailedLoginRefill: cfg.Auth.FailedLoginRefill.Std(),
			Keys: keys, Output: os.Stderr,
		}, log)
		if err != nil {
			meta.Close()
			blobs.Close()
			return nil, fmt.Errorf("authentication: %w", err)
		}
	} else {
		log.Warn("authentication is turned off: every caller may do everything")
	}
	s.handler = s.routes()
	return s, nil
}

// OpenStores opens the configured metadata database and blob store, with
// the data directory they default to. Call cfg.ResolvePaths first.
func OpenStores(ctx context.Context, cfg config.Config) (*metadata.Store, *blobstore.Store, error) {
	if err := os.MkdirAll(cfg.Data, 0o755); err != nil {
		return nil, nil, fmt.Errorf("create data directory: %w", err)
	}
	var meta *metadata.Store
	var err error
	if cfg.Database.Driver == "postgres" {
		meta, err = metadata.OpenPostgres(ctx, cfg.Database.DSN)
	} else {
		meta, err = metadata.OpenSQLite(ctx, cfg.DatabaseFile())
	}
	if err != nil {
		return nil, nil, err
	}
	blobs, err := blobstore.OpenURL(ctx, cfg.BlobURL())
	if err != nil {
		meta.Close()
		return nil, nil, err
	}
	return meta, blobs, nil
}

// SigningKeysTopic is the change notice of a key rotation.
const SigningKeysTopic = "signing-keys"

// OpenKeys opens the signing keys: in the data directory for the embedded
// SQLite, in the metadata database (shared by every replica) for
// PostgreSQL, which takes at first those of the data directory.
func OpenKeys(ctx context.Context, cfg config.Config, meta *metadata.Store) (*auth.KeyRing, error) {
	if cfg.Database.Driver == "postgres" {
		keys, err := auth.OpenSharedKeyRing(ctx, meta, cfg.KeyDir())
		if err != nil {
			return nil, fmt.Errorf("signing keys in the metadata database: %w", err)
		}
		return keys, nil
	}
	keys, err := auth.OpenKeyRing(cfg.KeyDir())
	if err != nil {
		return nil, fmt.Errorf("signing keys in %s: %w", cfg.KeyDir(), err)
	}
	return keys, nil
}

// routes is the HTTP edge: every API's route table, matched once per
// request, then the request metrics and access log, the gate (when
// authentication is on) and the route's handler, each reading the match.
func (s *Server) routes() http.Handler {
	metrics := newHTTPMetrics(s.promReg)

	apis := []*route.API{distribution.New(s.Registry, s.log).API()}
	apis = append(apis, mgmt.New(s.Registry, s.Conversion, s.Auth, mgmt.Options{IncludedStorage: s.cfg.Usage.IncludedStorage, Keys: s.Keys}, s.log).APIs()...)
	topts := token.Options{Service: s.cfg.Auth.Service}
	if s.Auth != nil {
		apis = append(apis, token.New(s.Auth, topts, s.log).API())
	}
	metricsHandler := promhttp.HandlerFor(s.promReg, promhttp.HandlerOpts{})
	apis = append(apis, (&route.API{
		Prefix: "",
		Routes: []route.Route{
			{Method: "GET", Pattern: "/healthz", Name: "healthz", Handle: s.healthz},
			{Method: "GET", Pattern: "/readyz", Name: "readyz", Handle: s.readyz},
			{Method: "GET", Pattern: "/metrics", Name: "metrics", Need: route.Registry(auth.Admin),
				Handle: func(w http.ResponseWriter, r *http.Request, _ route.Params) error {
					metricsHandler.ServeHTTP(w, r)
					return nil
				}},
		},
		Error: plainError,
	}).Compile())
	if s.cfg.Portal.Enabled {
		// Last: the portal's table is under /, and the APIs before it
		// keep their paths.
		apis = append(apis, portal.New(s.Registry, s.Conversion, s.Auth, portal.Options{
			IncludedStorage: s.cfg.Usage.IncludedStorage, SessionTTL: s.cfg.Auth.RefreshTTL.Std(), SoftDelete: s.cfg.SoftDelete.Retention(),
		}, s.log).API())
	}
	s.apis = apis
	chain := func(next http.Handler) http.Handler {
		if s.Auth != nil {
			next = token.NewGate(s.Auth, topts, s.log).Wrap(next)
		}
		return instrument(next, metrics, s.log, s.cfg.Log.Access)
	}
	return route.NewMux(chain, apis...)
}

// plainError answers the server's own paths (and unknown ones) in plain
// text.
func plainError(w http.ResponseWriter, r *http.Request, err error) {
	var me *route.MethodError
	if errors.As(err, &me) {
		w.Header().Set("Allow", strings.Join(me.Allow, ", "))
		http.Error(w, me.Error(), http.StatusMethodNotAllowed)
		return
	}
	http.NotFound(w, r)
}

// healthz answers 200 while the process serves: liveness, which a
// database or object store outage does not change (restarting sluiced
// would not end it), nor a full disk, on which pulls are still served:
// the body names each store that does not take writes, after "ok".
func (s *Server) healthz(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok\n" + s.writable.report(r.Context(), writableMaxAge)))
	return nil
}

// readyz answers 200 when this process should get requests: it is not
// draining, and its metadata database and blob store answer. A load
// balancer sends requests elsewhere while it fails.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	if s.draining.Load() {
		http.Error(w, "draining: shutting down", http.StatusServiceUnavailable)
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, _, err := s.meta.ListRepositories(ctx, "", 0); err != nil {
		s.log.Warn("not ready: the metadata database does not answer", "err", err)
		http.Error(w, "metadata database unavailable", http.StatusServiceUnavailable)
		return nil
	}
	if err := s.blobs.Ping(ctx); err != nil {
		s.log.Warn("not ready: the blob store does not answer", "err", err)
		http.Error(w, "blob store unavailable", http.StatusServiceUnavailable)
		return nil
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ready\n"))
	return nil
}

// APIs are the server's route tables, for tests that walk every route.
func (s *Server) APIs() []*route.API { return s.apis }

// Handler is the whole HTTP edge, for tests that serve it themselves.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves on ln and runs garbage collection until ctx ends, then shuts
// down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	var wg sync.WaitGroup
	bgCtx, stopBackground := context.WithCancel(ctx)
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.Registry.RunGC(bgCtx)
	}()
	go func() {
		defer wg.Done()
		s.writable.run(bgCtx, writableProbeInterval)
	}()
	// With streaming.workers 0 this replica only queues conversions, for
	// `sluiced worker` processes to run.
	if s.cfg.Streaming.Workers > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Conversion.Run(bgCtx)
		}()
	}
	errc := make(chan error, 1)
	scheme := "http"
	if s.cfg.TLS.Cert != "" {
		scheme = "https"
		go func() { errc <- srv.ServeTLS(ln, s.cfg.TLS.Cert, s.cfg.TLS.Key) }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	s.log.Info("sluiced serving", "address", ln.Addr().String(), "scheme", scheme, "data", s.cfg.Data, "auth", s.Auth != nil)

	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		s.drain()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = srv.Shutdown(shutdownCtx)
		cancel()
	}
	stopBackground()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// drain fails /readyz from now on and waits the configured drain delay,
// serving meanwhile, so that load balancers stop sending requests before
// the listener closes.
func (s *Server) drain() {
	s.draining.Store(true)
	if d := s.cfg.DrainDelay.Std(); d > 0 {
		s.log.Info("draining: /readyz fails; still serving for the drain delay", "delay", d)
		time.Sleep(d)
	}
	s.log.Info("shutting down: no new requests, waiting for those in flight")
}

// RunWorkers runs only the conversion workers until ctx ends: the body of
// `sluiced worker`, for scaling conversions out. With ln, it serves there
// /healthz, /readyz and /metrics (without authentication: give it an
// address only the cluster reaches).
func (s *Server) RunWorkers(ctx context.Context, ln net.Listener) error {
	s.log.Info("sluiced worker running", "workers", s.cfg.Streaming.Workers, "data", s.cfg.Data)
	if ln == nil {
		s.Conversion.Run(ctx)
		return nil
	}
	mux := http.NewServeMux()
	probe := func(h func(http.ResponseWriter, *http.Request, route.Params) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { _ = h(w, r, nil) }
	}
	mux.Handle("GET /healthz", probe(s.healthz))
	mux.Handle("GET /readyz", probe(s.readyz))
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.promReg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("worker probes and metrics", "address", ln.Addr().String())
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	done := make(chan struct{})
	go func() {
		s.Conversion.Run(runCtx)
		close(done)
	}()
	var err error
	select {
	case err = <-errc:
		stopRun()
	case <-ctx.Done():
		s.draining.Store(true)
	}
	<-done
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Close releases the stores.
func (s *Server) Close() error {
	return errors.Join(s.blobs.Close(), s.meta.Close())
}
