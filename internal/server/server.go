// Package server assembles sluiced: it opens the stores named by the
// configuration, builds the services, and serves the HTTP edge (/v2/,
// /healthz, /metrics) with request metrics and access logs.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/internal/api/dist"
	"github.com/sluicehq/sluice/internal/api/mgmt"
	"github.com/sluicehq/sluice/internal/api/token"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/blobstore"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/conversion"
	"github.com/sluicehq/sluice/internal/metadata"
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
}

// New opens the stores and builds the services and handlers.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*Server, error) {
	if err := cfg.ResolvePaths(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Data, 0o755); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	meta, err := metadata.OpenSQLite(ctx, cfg.DatabaseFile())
	if err != nil {
		return nil, err
	}
	blobs, err := blobstore.OpenURL(ctx, cfg.BlobURL())
	if err != nil {
		meta.Close()
		return nil, err
	}
	reg := registry.New(meta, blobs, registry.Options{
		GCInterval:    cfg.GC.Interval.Std(),
		GCGracePeriod: cfg.GC.GracePeriod.Std(),
		UploadTTL:     cfg.GC.UploadTTL.Std(),
		SoftDelete:    cfg.SoftDelete.Retention(),
	}, log)
	keys, err := auth.OpenKeyRing(cfg.KeyDir())
	if err != nil {
		meta.Close()
		blobs.Close()
		return nil, fmt.Errorf("signing keys in %s: %w", cfg.KeyDir(), err)
	}
	conv := conversion.New(reg, conversion.Options{Workers: cfg.Streaming.Workers, Lease: cfg.Streaming.Lease.Std(), Signer: keys}, log)
	s := &Server{cfg: cfg, log: log, meta: meta, blobs: blobs, Registry: reg, Conversion: conv, Keys: keys}
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

func (s *Server) routes() http.Handler {
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := newHTTPMetrics(promReg)

	mux := http.NewServeMux()
	distribution := dist.New(s.Registry, s.log)
	mux.Handle("/v2/", distribution)
	mux.Handle("/v2", distribution)
	management := mgmt.New(s.Registry, s.Conversion, s.Auth, mgmt.Options{IncludedStorage: s.cfg.Usage.IncludedStorage, Keys: s.Keys}, s.log)
	mux.Handle("/acr/v1/", management)
	mux.Handle("/mount/v1/", management)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}))
	var h http.Handler = mux
	if s.Auth != nil {
		topts := token.Options{Service: s.cfg.Auth.Service}
		mux.Handle("/oauth2/", token.New(s.Auth, topts, s.log))
		h = token.NewGate(s.Auth, topts, s.log, requirement).Wrap(mux)
	}
	return instrument(h, metrics, s.log, s.cfg.Log.Access, routeName)
}

// requirement says what each request needs of its caller.
func requirement(r *http.Request) auth.Requirement {
	p := r.URL.Path
	switch {
	case p == "/v2" || strings.HasPrefix(p, "/v2/"):
		return dist.Requirement(r)
	case strings.HasPrefix(p, "/acr/v1/") || strings.HasPrefix(p, "/mount/v1/"):
		return mgmt.Requirement(r)
	case p == "/metrics":
		return auth.Requirement{Accesses: []auth.Access{auth.Registry(auth.Admin)}}
	}
	// /healthz, /oauth2/ (which authenticates itself) and unknown paths.
	return auth.Requirement{Public: true}
}

func routeName(r *http.Request) string {
	p := r.URL.Path
	switch {
	case p == "/v2" || strings.HasPrefix(p, "/v2/"):
		return dist.RouteName(p)
	case strings.HasPrefix(p, "/acr/v1/") || strings.HasPrefix(p, "/mount/v1/"):
		return mgmt.RouteName(p)
	case p == "/healthz" || p == "/metrics" || p == "/oauth2/token" || p == "/oauth2/exchange":
		return strings.ReplaceAll(p[1:], "/", "_")
	}
	return "other"
}

// healthz answers 200 when the metadata database answers.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, _, err := s.meta.ListRepositories(ctx, "", 0); err != nil {
		http.Error(w, "metadata database unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok\n"))
}

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
		s.Conversion.Run(bgCtx)
	}()
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

// RunWorkers runs only the conversion workers until ctx ends: the body of
// `sluiced worker`, for scaling conversions out.
func (s *Server) RunWorkers(ctx context.Context) {
	s.log.Info("sluiced worker running", "workers", s.cfg.Streaming.Workers, "data", s.cfg.Data)
	s.Conversion.Run(ctx)
}

// Close releases the stores.
func (s *Server) Close() error {
	return errors.Join(s.blobs.Close(), s.meta.Close())
}
