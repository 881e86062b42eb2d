//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The node binaries, built on first use by nodeBinaries.
var (
	nodeBuild      sync.Once
	nodeBuildErr   error
	sluiceBin      string
	snapshotterBin string
)

// nodeBinaries builds the sluice CLI and sluice-snapshotter once, beside
// sluiced.
func nodeBinaries(t *testing.T) {
	t.Helper()
	nodeBuild.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		nodeBuildErr = buildCommands(ctx, binDir, "sluice", "sluice-snapshotter")
		sluiceBin, snapshotterBin = filepath.Join(binDir, "sluice"), filepath.Join(binDir, "sluice-snapshotter")
	})
	if nodeBuildErr != nil {
		t.Fatal(nodeBuildErr)
	}
}

// containerdFlavor is one containerd the node tests run against.
type containerdFlavor struct {
	name string
	// bin and ctr are the daemon and its client; dir, when set, holds them
	// and their shim, and goes first on the daemon's PATH.
	bin, ctr, dir string
	// configVersion is the config.toml version it reads.
	configVersion int
	// missing says why it cannot run here, for the skip message.
	missing string
}

// containerdFlavors returns Debian's containerd 1.6 (on PATH) and the 2.x
// that `make test-deps` builds into $(go env GOPATH)/containerd-v2/bin,
// kept off PATH so that containerd stays Debian's.
func containerdFlavors() []containerdFlavor {
	v1 := containerdFlavor{name: "containerd-1.6", configVersion: 2}
	var err1, err2 error
	v1.bin, err1 = exec.LookPath("containerd")
	v1.ctr, err2 = exec.LookPath("ctr")
	if err1 != nil || err2 != nil {
		v1.missing = "containerd and ctr are not on PATH; `make test-deps` installs Debian's containerd"
	} else if out, err := exec.Command(v1.bin, "--version").Output(); err != nil || !strings.Contains(string(out), " 1.") {
		v1.missing = fmt.Sprintf("containerd on PATH is not 1.x (%q, %v)", strings.TrimSpace(string(out)), err)
	}
	v2 := containerdFlavor{name: "containerd-2.x", configVersion: 3}
	if goPathBin != "" {
		v2.dir = filepath.Join(filepath.Dir(goPathBin), "containerd-v2", "bin")
	}
	v2.bin, v2.ctr = filepath.Join(v2.dir, "containerd"), filepath.Join(v2.dir, "ctr")
	for _, p := range []string{v2.bin, v2.ctr, filepath.Join(v2.dir, "containerd-shim-runc-v2")} {
		if _, err := os.Stat(p); err != nil {
			v2.missing = fmt.Sprintf("%s is missing; `make test-deps` builds containerd 2.x there", p)
		}
	}
	return []containerdFlavor{v1, v2}
}

// snapshotterOptions are the node settings of a test's sluice-snapshotter.
type snapshotterOptions struct {
	// registry (host:port) and the node's credentials for it.
	registry, user, password string
	cacheMaxBytes            int64
	backgroundDelay          string
	// startupProfilesOff writes startupProfiles: false (on by default).
	startupProfilesOff bool
	// unpackComplete writes unpackComplete: true (on by default in the
	// product; off here, so that the tests that read through FUSE mounts
	// keep them).
	unpackComplete bool
	// trust and trustKeys set the registry's trust (registry, the
	// default, when empty).
	trust     string
	trustKeys []string
	// others are more registries' settings.
	others map[string]registryOptions
	// criListen and criUpstream, when set, turn the CRI proxy on.
	criListen, criUpstream string
	// providersConfig and providersBinDir, when set, run kubelet
	// credential provider plugins.
	providersConfig, providersBinDir string
	// limits, when set, is the node's limits section (YAML under
	// "limits:", one "key: value" a line).
	limits []string
}

// registryOptions are a registry's settings in the node's config.
type registryOptions struct {
	user, password, trust string
	trustKeys             []string
}

// snapshotterProc is a sluice-snapshotter a test runs (and may kill and
// start again) with root, socket and log in a temporary directory; the FUSE
// manager it starts lives on in a session of its own until cleanup.
type snapshotterProc struct {
	t                       *testing.T
	dir, root, address, log string
	config, metricsAddr     string
	// registry is the one the node's credentials (user, password) are for.
	registry, user, password string
	opts                     snapshotterOptions
	d                        *daemon
}

// startSnapshotter writes the snapshotter's config and starts it. Cleanup
// stops it and its FUSE manager and unmounts what they left.
func startSnapshotter(t *testing.T, o snapshotterOptions) *snapshotterProc {
	t.Helper()
	// A short directory: the sockets' paths must fit in sun_path.
	dir, err := os.MkdirTemp("", "sn-")
	if err != nil {
		t.Fatal(err)
	}
	s := &snapshotterProc{t: t, dir: dir, root: filepath.Join(dir, "root"), address: filepath.Join(dir, "sluice.sock"),
		log: filepath.Join(dir, "snapshotter.log"), config: filepath.Join(dir, "snapshotter.yaml"), metricsAddr: freeLoopbackAddr(t),
		registry: o.registry, user: o.user, password: o.password}
	t.Cleanup(s.cleanup)
	s.configure(o)
	s.start()
	return s
}

// configure writes the snapshotter's config file; a running snapshotter
// (and its FUSE manager) reads it again at its next lookup.
func (s *snapshotterProc) configure(o snapshotterOptions) {
	s.t.Helper()
	s.opts = o
	var b strings.Builder
	fmt.Fprintf(&b, "metricsAddress: %q\ncacheMaxBytes: %d\nbackgroundDelay: %q\nstartupProfiles: %v\nunpackComplete: %v\nregistries:\n",
		s.metricsAddr, o.cacheMaxBytes, o.backgroundDelay, !o.startupProfilesOff, o.unpackComplete)
	registries := map[string]registryOptions{o.registry: {user: o.user, password: o.password, trust: o.trust, trustKeys: o.trustKeys}}
	for host, r := range o.others {
		registries[host] = r
	}
	for host, r := range registries {
		fmt.Fprintf(&b, "  %q:\n    username: %q\n    password: %q\n    plainHTTP: true\n", host, r.user, r.password)
		if r.trust != "" {
			fmt.Fprintf(&b, "    trust: %s\n", r.trust)
		}
		if len(r.trustKeys) > 0 {
			b.WriteString("    trustKeys:\n")
			for _, k := range r.trustKeys {
				fmt.Fprintf(&b, "      - %q\n", k)
			}
		}
	}
	if o.criListen != "" {
		fmt.Fprintf(&b, "criProxy:\n  listen: %q\n  upstream: %q\n", o.criListen, o.criUpstream)
	}
	if o.providersConfig != "" {
		fmt.Fprintf(&b, "credentialProviders:\n  config: %q\n  binDir: %q\n", o.providersConfig, o.providersBinDir)
	}
	if len(o.limits) > 0 {
		b.WriteString("limits:\n")
		for _, l := range o.limits {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	writeFile(s.t, s.config, []byte(b.String()))
}

// start runs the snapshotter and waits until it answers on its socket and
// serves metrics.
func (s *snapshotterProc) start() {
	t := s.t
	t.Helper()
	cmd := exec.Command(snapshotterBin, "--root", s.root, "--address", s.address, "--config", s.config, "--log-level", "debug")
	// Credentials come from the config alone, not from the machine's
	// docker config.json.
	home := filepath.Join(s.dir, "home")
	cmd.Env = append(os.Environ(), "HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, ".docker"))
	s.d = startDaemonLogFile(t, "sluice-snapshotter", cmd, s.log, nil)
	s.d.waitReady(t, time.Minute, "sluice-snapshotter answers on "+s.address, func() bool {
		c, err := net.Dial("unix", s.address)
		if err != nil {
			return false
		}
		c.Close()
		resp, err := http.Get("http://" + s.metricsAddr + "/metrics")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// managerRoot is the FUSE manager's state directory, which its command
// line names.
func (s *snapshotterProc) managerRoot() string { return filepath.Join(s.root, "fusemanager") }

// managerPIDs lists the FUSE managers of this snapshotter.
func (s *snapshotterProc) managerPIDs() []int {
	return processesWithArgs("--root", s.managerRoot())
}

// logText is the snapshotter's log so far, and the FUSE manager's.
func (s *snapshotterProc) logText() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

func (s *snapshotterProc) managerLog() string {
	b, _ := os.ReadFile(filepath.Join(s.root, "fuse-manager.log"))
	return string(b)
}

// metrics scrapes the snapshotter's endpoint (its own metrics and the FUSE
// manager's) into sample name{labels} -> value.
func (s *snapshotterProc) metrics() map[string]float64 {
	s.t.Helper()
	resp, err := http.Get("http://" + s.metricsAddr + "/metrics")
	if err != nil {
		s.t.Fatalf("snapshotter metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("snapshotter metrics: %s\n%s", resp.Status, body)
	}
	return parseMetrics(string(body))
}

// parseMetrics reads Prometheus text exposition into sample -> value.
func parseMetrics(text string) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func (s *snapshotterProc) cleanup() {
	t := s.t
	// The serve processes' own cleanups ran already (they were registered
	// later); the FUSE manager goes next, and unmounts its layers.
	stopProcesses(t, "FUSE manager", s.managerPIDs())
	unmountUnder(t, s.dir)
	// With SLUICE_E2E_RACE=1 both are built with the race detector.
	for name, text := range map[string]string{"sluice-snapshotter": s.logText(), "the FUSE manager": s.managerLog()} {
		if strings.Contains(text, "WARNING: DATA RACE") {
			t.Errorf("the race detector fired in %s:\n%s", name, text)
		}
	}
	if t.Failed() {
		t.Logf("sluice-snapshotter log:\n%s", lastLines(s.logText(), 60))
		t.Logf("FUSE manager log:\n%s", lastLines(s.managerLog(), 40))
	}
	if err := os.RemoveAll(s.dir); err != nil {
		t.Errorf("remove snapshotter directory: %v", err)
	}
}

// stopProcesses sends SIGTERM to processes that are not the test's
// children, waits until they are gone, and kills those that linger.
func stopProcesses(t *testing.T, what string, pids []int) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	for _, pid := range pids {
		if !poll(15*time.Second, func() bool { return processGone(pid) }) {
			t.Logf("%s %d ignored SIGTERM; killing it", what, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			if !poll(15*time.Second, func() bool { return processGone(pid) }) {
				t.Errorf("%s %d survived SIGKILL", what, pid)
			}
		}
	}
}

// processGone reports whether pid has exited (a zombie whose parent does
// not reap it counts).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] == 'Z'
	}
	return false
}

// processesWithArgs lists the processes whose command line has flag
// followed by value (or flag=value).
func processesWithArgs(flag, value string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		for i, a := range args {
			if a == flag+"="+value || (a == flag && i+1 < len(args) && args[i+1] == value) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// fuseMountsUnder lists the mount points of FUSE file systems of type
// fuse.sluice below dir.
func fuseMountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		// Optional fields end with "-", then the file system type.
		pre, post, ok := strings.Cut(line, " - ")
		fields, fsType := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(fsType) == 0 {
			continue
		}
		if fsType[0] == "fuse.sluice" && strings.HasPrefix(fields[4], dir+"/") {
			out = append(out, fields[4])
		}
	}
	return out
}
