package snapshotter

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/streaming"
)

// TestConfigLimits: the node's limits default to the documented values,
// a file may change any of them, and a limit that is not positive is
// refused naming its key.
func TestConfigLimits(t *testing.T) {
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "snapshotter.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if want := (LimitsConfig{MaxTOCBytes: 64 << 20, MaxTOCJSONBytes: 256 << 20, MaxEntries: 1 << 20}); c.Limits != want {
		t.Errorf("default limits %+v, want %+v", c.Limits, want)
	}
	c, err = LoadConfig(write("limits:\n  maxEntries: 5000\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := c.Limits.Streaming()
	if want := (streaming.Limits{MaxTOCSize: 64 << 20, MaxTOCUncompressedSize: 256 << 20, MaxEntries: 5000}); got != want {
		t.Errorf("limits with maxEntries 5000: %+v, want %+v", got, want)
	}
	for _, bad := range []string{"limits:\n  maxTOCBytes: 0\n", "limits:\n  maxEntries: -1\n", "limits:\n  maxTOCJSONBytes: -5\n"} {
		if _, err := LoadConfig(write(bad)); err == nil || !strings.Contains(err.Error(), "must be positive") {
			t.Errorf("%q: error %v, want one saying the limits must be positive", bad, err)
		}
	}
	if _, err := LoadConfig(write("limits:\n  maxFiles: 10\n")); err == nil {
		t.Error("an unknown limit key was accepted")
	}
}
