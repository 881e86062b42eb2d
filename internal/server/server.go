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
	keys, err := auth.OpenKeyRing(cfg.KeyDir())
	if err != nil {
		meta.Close()
		blobs.Close()
		return nil, fmt.Errorf("signing keys in %s: %w", cfg.KeyDir(), err)
	}
	conv := conversion.New(reg, meta, conversion.Options{Workers: cfg.Streaming.Workers, Lease: cfg.Streaming.Lease.Std(), Signer: keys}, log)
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

// routes is the HTTP edge: every API's route table, matched once per
// request, then the request metrics and access log, the gate (when
// authentication is on) and the route's handler, each reading the match.
func (s *Server) routes() http.Handler {
	promReg := promreg.New("sluiced")
	metrics := newHTTPMetrics(promReg)

	apis := []*route.API{distribution.New(s.Registry, s.log).API()}
	apis = append(apis, mgmt.New(s.Registry, s.Conversion, s.Auth, mgmt.Options{IncludedStorage: s.cfg.Usage.IncludedStorage, Keys: s.Keys}, s.log).APIs()...)
	topts := token.Options{Service: s.cfg.Auth.Service}
	if s.Auth != nil {
		apis = append(apis, token.New(s.Auth, topts, s.log).API())
	}
	metricsHandler := promhttp.HandlerFor(promReg, promhttp.HandlerOpts{})
	apis = append(apis, (&route.API{
		Prefix: "",
		Routes: []route.Route{
			{Method: "GET", Pattern: "/healthz", Name: "healthz", Handle: s.healthz},
			{Method: "GET", Pattern: "/metrics", Name: "metrics", Need: route.Registry(auth.Admin),
				Handle: func(w http.ResponseWriter, r *http.Request, _ route.Params) error {
					metricsHandler.ServeHTTP(w, r)
					return nil
				}},
		},
		Error: plainError,
	}).Compile())
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

// healthz answers 200 when the metadata database answers.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, _, err := s.meta.ListRepositories(ctx, "", 0); err != nil {
		http.Error(w, "metadata database unavailable", http.StatusServiceUnavailable)
		return nil
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok\n"))
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
