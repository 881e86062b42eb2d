// Package scripts tests the shell scripts beside it.
package scripts

import (
	"cmp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestInstallTestDepsStartsAndStopsNothingElse runs install-test-deps.sh
// with stand-ins for apt-get and the service tools, in a mount namespace
// whose /usr/sbin is empty (so the machine's policy-rc.d is out of sight),
// and holds it to this: the package install may start no service, because
// a policy-rc.d refusing it is in place for the install only; a
// policy-rc.d the machine had is left as it was; and nothing is ever
// stopped by name (pkill, killall), which would end processes the script
// did not start. Tools already there are not installed again; Azurite of
// another version is.
func TestInstallTestDepsStartsAndStopsNothingElse(t *testing.T) {
	testenv.Root(t, "the test mounts an empty /usr/sbin in a mount namespace")
	err := exec.Command("unshare", "--mount", "true").Run()
	testenv.Need(t, err == nil, "cannot make a mount namespace (unshare --mount: %v)", err)
	script, err := filepath.Abs("install-test-deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		// machinePolicy is the policy-rc.d the machine has ("" for none).
		machinePolicy string
		installFails  bool
		// want lists the lines the stand-ins must log, in order.
		want []string
		// after is what /usr/sbin/policy-rc.d holds afterwards.
		after string
		// azurite is the version of Azurite installed ("" for the one the
		// script wants).
		azurite string
	}{
		{name: "no policy-rc.d", want: []string{"install: start refused"}},
		{name: "install fails", installFails: true, want: []string{"install: start refused"}},
		{
			name:          "the machine's policy-rc.d",
			machinePolicy: "#!/bin/sh\nexit 0\n",
			want:          []string{"install: started", "service docker-registry stop"},
			after:         "#!/bin/sh\nexit 0\n",
		},
		{
			name:    "an older Azurite",
			azurite: "3.34.0",
			want:    []string{"install: start refused", "npm install azurite@3.35.0"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			logFile := filepath.Join(dir, "calls.log")
			fakeTools(t, bin, filepath.Join(dir, "gopath"), logFile, tc.installFails, cmp.Or(tc.azurite, "3.35.0"))
			// In the namespace: an empty /usr/sbin, the machine's policy
			// if any, the script, then what /usr/sbin/policy-rc.d holds.
			inner := `mount -t tmpfs tmpfs /usr/sbin || exit 99
if [ -n "$MACHINE_POLICY" ]; then printf '%s' "$MACHINE_POLICY" >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; fi
bash "$SCRIPT" >/dev/null; rc=$?
cat /usr/sbin/policy-rc.d 2>/dev/null >"$AFTER"
exit $rc`
			cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", inner)
			cmd.Env = []string{
				"PATH=" + bin + ":/usr/bin:/bin",
				"SCRIPT=" + script,
				"MACHINE_POLICY=" + tc.machinePolicy,
				"AFTER=" + filepath.Join(dir, "after"),
			}
			out, err := cmd.CombinedOutput()
			if tc.installFails != (err != nil) {
				t.Fatalf("the script's exit: %v, want failure %v:\n%s", err, tc.installFails, out)
			}
			calls, _ := os.ReadFile(logFile)
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(string(calls)), "\n") {
				if strings.HasPrefix(line, "pkill") || strings.HasPrefix(line, "killall") {
					t.Errorf("the script stops processes by name: %s", line)
				}
				if strings.HasPrefix(line, "install:") || strings.HasPrefix(line, "service") || strings.HasPrefix(line, "go ") || strings.HasPrefix(line, "npm ") {
					got = append(got, line)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("calls %q, want %q (all: %s)", got, tc.want, calls)
			}
			if after, _ := os.ReadFile(filepath.Join(dir, "after")); string(after) != tc.after {
				t.Errorf("policy-rc.d afterwards %q, want %q", after, tc.after)
			}
		})
	}
}

// fakeTools writes stand-ins, logging to logFile, for what the script runs:
// dpkg-query says only docker-registry is missing; apt-get's install starts
// the service as a package's maintainer script does, through policy-rc.d;
// the Go tools and containerd are already in gopath, and Azurite of the
// given version in its prefix there; npm logs what it would install.
func fakeTools(t *testing.T, bin, gopath, logFile string, installFails bool, azurite string) {
	t.Helper()
	fail := ""
	if installFails {
		fail = "exit 100"
	}
	tools := map[string]string{
		"dpkg-query": `case "$*" in *docker-registry*) exit 1;; esac; printf 'install ok installed'`,
		"apt-get": `case "$1" in update) exit 0;; esac
if [ -x /usr/sbin/policy-rc.d ] && { /usr/sbin/policy-rc.d docker-registry start; [ $? -eq 101 ]; }; then
	echo "install: start refused" >>"$LOG"
else
	echo "install: started" >>"$LOG"
fi
` + fail,
		"go":        `[ "$1 $2" = "env GOPATH" ] && { echo "$GOPATH_DIR"; exit 0; }; echo "go $*" >>"$LOG"`,
		"npm":       `for a; do last=$a; done; echo "npm $1 $last" >>"$LOG"`,
		"pkill":     `echo "pkill $*" >>"$LOG"`,
		"killall":   `echo "killall $*" >>"$LOG"`,
		"service":   `echo "service $*" >>"$LOG"`,
		"systemctl": `echo "systemctl $*" >>"$LOG"`,
	}
	for name, body := range tools {
		script := "#!/bin/sh\nLOG=" + logFile + "\nGOPATH_DIR=" + gopath + "\n" + body + "\n"
		writeExecutable(t, filepath.Join(bin, name), script)
	}
	for _, name := range []string{"oras", "crane", "crictl", "versitygw"} {
		writeExecutable(t, filepath.Join(gopath, "bin", name), "#!/bin/sh\n")
	}
	writeExecutable(t, filepath.Join(gopath, "sluice-test-tools", "azurite", "node_modules", ".bin", "azurite-blob"), "#!/bin/sh\necho "+azurite+"\n")
	v2 := filepath.Join(gopath, "containerd-v2", "bin")
	writeExecutable(t, filepath.Join(v2, "containerd"), "#!/bin/sh\necho 'containerd github.com/containerd/containerd/v2 2.4.2+unknown'\n")
	for _, name := range []string{"ctr", "containerd-shim-runc-v2"} {
		writeExecutable(t, filepath.Join(v2, name), "#!/bin/sh\n")
	}
}

func writeExecutable(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
}
