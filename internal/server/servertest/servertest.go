// Package servertest runs a sluiced in process for the tests of packages
// that talk to one: temporary stores, no access log, a quiet logger, and
// conversion workers only when a test starts them (so that it can see
// operations wait in the queue).
package servertest

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/server"
)

// Server is a running registry.
type Server struct {
	*server.Server
	TS *httptest.Server
	// Host is host:port of TS.
	Host string

	mu       sync.Mutex
	stopWork func() // nil when no workers run
}

// Start serves a fresh registry on the default configuration as tweak
// (which may be nil) changes it; the test's cleanup stops it.
func Start(t testing.TB, tweak func(*config.Config)) *Server {
	t.Helper()
	cfg := config.Default()
	cfg.Data = t.TempDir()
	cfg.Log.Access = false
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Server: srv, TS: httptest.NewServer(srv.Handler())}
	s.Host = strings.TrimPrefix(s.TS.URL, "http://")
	t.Cleanup(func() {
		s.StopWorkers()
		s.TS.Close()
		srv.Close()
	})
	return s
}

// StartWorkers runs the conversion workers until StopWorkers; it does
// nothing when they run already.
func (s *Server) StartWorkers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopWork != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.Conversion.Run(ctx)
		close(done)
	}()
	s.stopWork = func() {
		cancel()
		<-done
	}
}

// StopWorkers stops the conversion workers and waits for them.
func (s *Server) StopWorkers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopWork != nil {
		s.stopWork()
		s.stopWork = nil
	}
}
