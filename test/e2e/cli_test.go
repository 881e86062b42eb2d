package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSluicedCommandLine covers the binary as an operator meets it: help,
// refusals of bad settings, serving on a port the kernel picks (the address
// is in the startup log), the side endpoints, and a graceful SIGTERM.
func TestSluicedCommandLine(t *testing.T) {
	run := func(env []string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, sluicedBin, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	t.Run("help", func(t *testing.T) {
		tests := []struct {
			args []string
			want []string
		}{
			{[]string{"--help"}, []string{"serve", "--listen", "--data", "--config"}},
			{[]string{"serve", "--help"}, []string{"--listen", "--data", "sluiced serve --listen"}},
		}
		for _, tt := range tests {
			out, err := run(nil, tt.args...)
			if err != nil {
				t.Errorf("sluiced %s: %v\n%s", strings.Join(tt.args, " "), err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("sluiced %s does not mention %q:\n%s", strings.Join(tt.args, " "), w, out)
				}
			}
		}
	})

	t.Run("bad settings", func(t *testing.T) {
		data := t.TempDir()
		tests := []struct {
			name string
			env  []string
			args []string
			want string
		}{
			{"unparsable listen address", nil, []string{"serve", "--listen", "127.0.0.1:notaport", "--data", data}, "listen"},
			{"unknown log level", []string{"SLUICE_LOG_LEVEL=loud"}, []string{"serve", "--listen", "127.0.0.1:0", "--data", data}, "log.level"},
			{"bad duration", []string{"SLUICE_GC_INTERVAL=soon"}, []string{"serve", "--listen", "127.0.0.1:0", "--data", data}, "SLUICE_GC_INTERVAL"},
			{"missing config file", nil, []string{"serve", "--config", filepath.Join(data, "nope.yaml"), "--data", data}, "nope.yaml"},
		}
		for _, tt := range tests {
			out, err := run(tt.env, tt.args...)
			if err == nil {
				t.Errorf("%s: sluiced started anyway:\n%s", tt.name, out)
				continue
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("%s: the error does not mention %q:\n%s", tt.name, tt.want, out)
			}
		}
	})

	t.Run("serve and stop", func(t *testing.T) {
		data := t.TempDir()
		reg := startSluiced(t, data)
		tests := []struct {
			path, wantHeader, wantBody string
		}{
			{"/v2/", "Docker-Distribution-API-Version", "{}"},
			{"/healthz", "", "ok"},
			{"/metrics", "", "sluice_http_requests_total"},
		}
		for _, tt := range tests {
			resp, err := http.Get(reg.url(tt.path))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("GET %s: %d %q, want 200 containing %q", tt.path, resp.StatusCode, body, tt.wantBody)
			}
			if tt.wantHeader != "" && resp.Header.Get(tt.wantHeader) == "" {
				t.Errorf("GET %s: no %s header", tt.path, tt.wantHeader)
			}
		}
		if err := reg.stop(30 * time.Second); err != nil {
			t.Errorf("sluiced did not exit cleanly on SIGTERM: %v", err)
		}
		if _, err := os.Stat(filepath.Join(data, "sluice.db")); err != nil {
			t.Errorf("no database in the data directory: %v", err)
		}
	})
}
