package fusemanager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/internal/streaming"
)

// Handler is the manager's API, served on a unix socket only root can
// reach: POST /mount, POST /unmount, POST /detach, GET /check, GET
// /fetched, GET /layer, GET /status, GET /metrics, GET /in-use and POST
// /stop. GET /layer?mountpoint= writes a complete layer's original tar (409
// until the layer is complete). GET /fetched?mountpoint= answers
// {"bytes": n}, what the layer mounted there fetched from its registry. A layer found bad answers 410 Gone to /mount
// and /check; a layer whose TOC is refused answers 422 to /mount, 413 when
// it is over the node's limits; /stop answers 409 Conflict while layers
// are in use.
func (m *Manager) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mount", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Mountpoint string   `json:"mountpoint"`
			Layer      LayerRef `json:"layer"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || req.Mountpoint == "" {
			http.Error(w, "body must be {mountpoint, layer}", http.StatusBadRequest)
			return
		}
		if err := m.Mount(r.Context(), req.Mountpoint, req.Layer); err != nil {
			http.Error(w, err.Error(), errStatus(err, http.StatusBadGateway))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /unmount", byMountpoint(m.Unmount))
	mux.HandleFunc("POST /detach", byMountpoint(m.Detach))
	mux.HandleFunc("GET /check", func(w http.ResponseWriter, r *http.Request) {
		if err := m.Check(r.URL.Query().Get("mountpoint")); err != nil {
			http.Error(w, err.Error(), errStatus(err, http.StatusServiceUnavailable))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /fetched", func(w http.ResponseWriter, r *http.Request) {
		n, err := m.Fetched(r.URL.Query().Get("mountpoint"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, http.StatusOK, fetchedResult{Bytes: n})
	})
	mux.HandleFunc("GET /layer", func(w http.ResponseWriter, r *http.Request) {
		// The status is sent with the first bytes; an error after them
		// cuts the body short, which the client sees as a truncated tar.
		mp := r.URL.Query().Get("mountpoint")
		lm, err := m.completeMount(mp)
		if err != nil {
			http.Error(w, err.Error(), errStatus(err, http.StatusConflict))
			return
		}
		w.Header().Set("Content-Type", "application/x-tar")
		// Every chunk is checked as it is read, the DiffID at the end.
		if err := lm.reader.WriteTo(withKind(r.Context(), background), w); err != nil {
			m.log.Error("writing a complete layer failed", "mountpoint", mp, "err", err)
			if errors.Is(err, streaming.ErrDiffIDMismatch) || errors.Is(err, streaming.ErrChunkVerification) {
				m.metrics.verifyFailures.Inc()
				m.markBad(lm, err) // as a FUSE read of the same bytes would
			}
			panic(http.ErrAbortHandler) // the client must not take a short tar for the layer
		}
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(m.Statuses())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /in-use", func(w http.ResponseWriter, r *http.Request) {
		busy, err := m.InUse()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, http.StatusOK, StopResult{InUse: busy})
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Force bool `json:"force"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "body must be {force}", http.StatusBadRequest)
			return
		}
		n, busy, err := m.Stop(req.Force)
		switch {
		case errors.Is(err, ErrInUse):
			writeJSON(w, http.StatusConflict, StopResult{Unmounted: n, InUse: busy})
		case errors.Is(err, ErrStopping):
			http.Error(w, err.Error(), http.StatusConflict)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			writeJSON(w, http.StatusOK, StopResult{Unmounted: n, InUse: busy})
		}
	})
	return mux
}

// StopResult is the answer to /stop and /in-use: how many layers were
// unmounted, and those in use (left mounted, or detached with force).
type StopResult struct {
	Unmounted int     `json:"unmounted"`
	InUse     []InUse `json:"inUse"`
}

// fetchedResult is the answer to /fetched.
type fetchedResult struct {
	Bytes int64 `json:"bytes"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Serve serves the API on a unix socket until ctx ends or Stop has
// unmounted every layer.
func (m *Manager) Serve(ctx context.Context, socket string) error {
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return err
	}
	_ = os.Remove(socket)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	case <-m.stopped:
	}
	// Requests being answered, the /stop that ended Serve among them,
	// get their answers.
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// Client talks to a manager over its socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the manager listening on socket.
func NewClient(socket string) *Client {
	return &Client{socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

// do sends a request with body as JSON.
func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://fuse-manager"+path, r)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("FUSE manager at %s: %w", c.socket, err)
	}
	return resp, nil
}

func (c *Client) call(ctx context.Context, method, path string, body any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return errorOfStatus(resp.StatusCode, errors.New(string(bytes.TrimSpace(msg))))
	}
	return nil
}

// errorOfStatus wraps err in the kind of error a status of the manager's
// answers says (errStatus's inverse).
func errorOfStatus(status int, err error) error {
	switch status {
	case http.StatusNotFound:
		return fmt.Errorf("%w: %v", ErrNotMounted, err)
	case http.StatusConflict:
		return fmt.Errorf("%w: %v", ErrNotComplete, err)
	case http.StatusGone:
		return fmt.Errorf("%w: %v", ErrLayerBad, err)
	case http.StatusRequestEntityTooLarge:
		return &Refusal{Kind: ErrOverLimit, Err: err}
	case http.StatusUnprocessableEntity:
		return &Refusal{Kind: ErrBadArtifact, Err: err}
	}
	return err
}

// Mount asks the manager to mount a layer.
func (c *Client) Mount(ctx context.Context, mountpoint string, ref LayerRef) error {
	return c.call(ctx, "POST", "/mount", map[string]any{"mountpoint": mountpoint, "layer": ref})
}

// Unmount asks the manager to unmount a layer.
func (c *Client) Unmount(ctx context.Context, mountpoint string) error {
	return c.call(ctx, "POST", "/unmount", map[string]any{"mountpoint": mountpoint})
}

// Detach takes a mount off its mountpoint and serves it until the
// containers that hold it let go.
func (c *Client) Detach(ctx context.Context, mountpoint string) error {
	return c.call(ctx, "POST", "/detach", map[string]any{"mountpoint": mountpoint})
}

// Check asks whether a mount is served and healthy.
func (c *Client) Check(ctx context.Context, mountpoint string) error {
	return c.call(ctx, "GET", "/check?mountpoint="+url.QueryEscape(mountpoint), nil)
}

// Fetched returns the bytes the layer mounted at mountpoint has fetched
// from its registry so far; the error wraps ErrNotMounted for a
// mountpoint the manager does not serve.
func (c *Client) Fetched(ctx context.Context, mountpoint string) (int64, error) {
	resp, err := c.do(ctx, "GET", "/fetched?mountpoint="+url.QueryEscape(mountpoint), nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, c.answerError(resp)
	}
	var res fetchedResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&res); err != nil {
		return 0, fmt.Errorf("FUSE manager at %s: /fetched: %w", c.socket, err)
	}
	return res.Bytes, nil
}

// InUse lists the mounted layers that something uses.
func (c *Client) InUse(ctx context.Context) ([]InUse, error) {
	res, err := c.stopCall(ctx, "GET", "/in-use", nil)
	return res.InUse, err
}

// Stop asks the manager to unmount every layer and exit (see
// Manager.Stop). While layers are in use the error wraps ErrInUse and the
// result lists them.
func (c *Client) Stop(ctx context.Context, force bool) (StopResult, error) {
	return c.stopCall(ctx, "POST", "/stop", map[string]bool{"force": force})
}

func (c *Client) stopCall(ctx context.Context, method, path string, body any) (StopResult, error) {
	var res StopResult
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "application/json" {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return res, fmt.Errorf("FUSE manager at %s: %s: %s", c.socket, resp.Status, bytes.TrimSpace(msg))
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return res, fmt.Errorf("FUSE manager at %s: %s: %w", c.socket, path, err)
	}
	if resp.StatusCode == http.StatusConflict {
		return res, ErrInUse
	}
	return res, nil
}

// Layer reads the original tar of a streamed layer complete on the node;
// ErrNotComplete until it is. The caller checks the tar's DiffID: a body
// cut short by the manager is an error of the read, never a shorter layer.
func (c *Client) Layer(ctx context.Context, mountpoint string) (io.ReadCloser, error) {
	resp, err := c.do(ctx, "GET", "/layer?mountpoint="+url.QueryEscape(mountpoint), nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, c.answerError(resp)
	}
	return resp.Body, nil
}

// Statuses lists the manager's mounts, as GET /status answers.
func (c *Client) Statuses(ctx context.Context) ([]Status, error) {
	resp, err := c.do(ctx, "GET", "/status", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, c.answerError(resp)
	}
	var out []Status
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("FUSE manager at %s: /status: %w", c.socket, err)
	}
	return out, nil
}

// Alive reports whether a manager answers on the socket.
func (c *Client) Alive(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://fuse-manager/status", nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// MetricsURL is the path of the manager's metrics, for gathering them.
func (c *Client) Metrics(ctx context.Context) (io.ReadCloser, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://fuse-manager/metrics", nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("FUSE manager metrics: %s", resp.Status)
	}
	return resp.Body, nil
}

// Ensure returns a client of the manager on socket, starting one (this
// binary with args, in its own session so that it outlives its parent) when
// none answers. started reports whether it had to.
func Ensure(ctx context.Context, socket, logFile string, args ...string) (c *Client, started bool, err error) {
	c = NewClient(socket)
	if c.Alive(ctx) {
		return c, false, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(logFile), 0o700); err != nil {
		return nil, false, err
	}
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, false, err
	}
	defer lf.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, false, fmt.Errorf("start the FUSE manager: %w", err)
	}
	go func() { _ = cmd.Wait() }() // reaped if it exits while we run
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c.Alive(ctx) {
			return c, true, nil
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil, false, fmt.Errorf("the FUSE manager did not answer on %s within 30s; see %s", socket, logFile)
}

// byMountpoint serves a request whose body is {"mountpoint"} with do:
// 204 when it succeeds.
func byMountpoint(do func(ctx context.Context, mountpoint string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Mountpoint string `json:"mountpoint"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || req.Mountpoint == "" {
			http.Error(w, "body must be {mountpoint}", http.StatusBadRequest)
			return
		}
		if err := do(r.Context(), req.Mountpoint); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// errStatus is the HTTP status of a manager's error: what its kind says,
// otherwise.
func errStatus(err error, otherwise int) int {
	switch {
	case errors.Is(err, ErrNotMounted):
		return http.StatusNotFound
	case errors.Is(err, ErrLayerBad):
		return http.StatusGone
	case errors.Is(err, ErrOverLimit):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrBadArtifact):
		return http.StatusUnprocessableEntity
	}
	return otherwise
}

// answerError is the error of an answer that is not 200: the manager's
// message with the socket and status, of the kind the status says.
func (c *Client) answerError(resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return errorOfStatus(resp.StatusCode, fmt.Errorf("FUSE manager at %s: %s: %s", c.socket, resp.Status, bytes.TrimSpace(msg)))
}
