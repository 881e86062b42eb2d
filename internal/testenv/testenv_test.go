package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNeedSkipsOrFails runs a test with an unmet need in a child process,
// with and without StrictVar: skipped without, failed with.
func TestNeedSkipsOrFails(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") != "" {
		Need(t, false, "no frobnicator here")
		t.Fatal("Need returned on an unmet need")
	}
	for _, c := range []struct {
		strict  string
		wantErr bool
		want    string
	}{
		{"", false, "--- SKIP"},
		{"1", true, "--- FAIL"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestNeedSkipsOrFails$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", StrictVar+"="+c.strict)
		out, err := cmd.CombinedOutput()
		if (err != nil) != c.wantErr || !strings.Contains(string(out), c.want) || !strings.Contains(string(out), "no frobnicator here") {
			t.Errorf("%s=%q: err %v, want %s:\n%s", StrictVar, c.strict, err, c.want, out)
		}
	}
}
