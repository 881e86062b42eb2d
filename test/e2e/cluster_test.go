package e2e

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestClientsThroughCluster starts the reference topology of
// deploy/local-cluster.sh (PostgreSQL, Azurite, 3 replicas, 2 workers,
// HAProxy balancing each request) with the sluiced under test, and runs
// skopeo, crane and oras through the load balancer: every client works,
// and each request of an upload session after the first, its PATCH
// included, lands on another replica than the one before it.
func TestClientsThroughCluster(t *testing.T) {
	_, err := exec.LookPath("haproxy")
	testenv.Need(t, err == nil, "haproxy not found; make test-deps installs it")
	skopeo, crane, oras := requireTool(t, "skopeo"), requireTool(t, "crane"), requireTool(t, "oras")
	script, err := filepath.Abs("../../deploy/local-cluster.sh")
	if err != nil {
		t.Fatal(err)
	}
	port := freePortRange(t, 9)
	state := filepath.Join(t.TempDir(), "cluster")
	env := append(os.Environ(), "SLUICE_CLUSTER_DIR="+state, "SLUICE_CLUSTER_BIN="+binDir,
		fmt.Sprintf("SLUICE_CLUSTER_PORT=%d", port), fmt.Sprintf("SLUICE_CLUSTER_BASE_PORT=%d", port+1))
	cluster := func(command string) string {
		t.Helper()
		cmd := exec.Command(script, command)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("local-cluster.sh %s: %v\n%s", command, err, out)
		}
		return string(out)
	}
	cluster("up")
	t.Cleanup(func() { cluster("down") })
	password, err := os.ReadFile(filepath.Join(state, "admin-password"))
	if err != nil {
		t.Fatal(err)
	}
	creds := "admin:" + strings.TrimSpace(string(password))
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	cl := newClients(t)
	// One layer: skopeo uploads it, then the config, one after the other,
	// so that the requests of a session follow each other through the
	// balancer (skopeo uploads several layers at once).
	img := newTestImage(t, newRand(t), 300<<10)
	src := filepath.Join(cl.dir, "src")
	img.writeLayout(t, src, "v1")
	logs := func(i int) string { return filepath.Join(state, "logs", fmt.Sprintf("replica-%d.log", i)) }
	before := map[int]int{}
	for i := 1; i <= 3; i++ {
		before[i] = len(requestLines(t, logs(i)))
	}
	cl.run(skopeo, "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", creds,
		"oci:"+src+":v1", "docker://"+addr+"/cluster/skopeo:v1")
	// The push's requests, in order, with the replica that served each.
	var push []string
	for i := 1; i <= 3; i++ {
		for _, l := range requestLines(t, logs(i))[before[i]:] {
			push = append(push, fmt.Sprintf("%s@%d@%s", l.method+" "+l.path, i, l.time))
		}
	}
	sortByTime(push)
	patches := 0
	for j, r := range push {
		if strings.HasPrefix(r, "PATCH") {
			patches++
		}
		// Requests logged in the same millisecond may be out of order:
		// those pairs tell nothing.
		tied := func(k int) bool { return k > 0 && k < len(push) && timeOfEntry(push[k]) == timeOfEntry(push[k-1]) }
		if j > 0 && !tied(j-1) && !tied(j) && !tied(j+1) && replicaOf(r) == replicaOf(push[j-1]) {
			t.Errorf("skopeo's requests %q and %q were served by one replica: the balancer did not send each to the next", push[j-1], r)
		}
	}
	if patches == 0 {
		t.Errorf("skopeo's push sent no PATCH through the balancer: %v", push)
	}
	t.Logf("skopeo's push: %d requests, %d PATCHes, each on another replica than the one before", len(push), patches)
	back := filepath.Join(cl.dir, "back")
	cl.run(skopeo, "--insecure-policy", "copy", "--src-tls-verify=false", "--src-creds", creds,
		"docker://"+addr+"/cluster/skopeo:v1", "oci:"+back+":v1")
	checkLayoutBlobs(t, back, img.Blobs)

	user, pw, _ := strings.Cut(creds, ":")
	cl.run(crane, "auth", "login", addr, "-u", user, "-p", pw)
	cl.run(crane, "copy", "--insecure", addr+"/cluster/skopeo:v1", addr+"/cluster/crane:v1")
	if got := strings.TrimSpace(cl.run(crane, "digest", "--insecure", addr+"/cluster/crane:v1")); got != img.ManifestDigest.String() {
		t.Errorf("crane digest of the copy: %s, want %s", got, img.ManifestDigest)
	}
	writeFile(t, filepath.Join(cl.dir, "notes.txt"), []byte("an artifact pushed through the cluster\n"))
	cl.run(oras, "push", "--plain-http", "-u", user, "-p", pw, addr+"/cluster/oras:v1", "notes.txt")
	pulled := filepath.Join(cl.dir, "pulled")
	cl.run(oras, "pull", "--plain-http", "-u", user, "-p", pw, "-o", pulled, addr+"/cluster/oras:v1")
	if b, err := os.ReadFile(filepath.Join(pulled, "notes.txt")); err != nil || string(b) != "an artifact pushed through the cluster\n" {
		t.Errorf("oras pulled %q (%v)", b, err)
	}

}

// logEntry is one request in a replica's access log (text format).
type logEntry struct{ time, method, path string }

var requestLine = regexp.MustCompile(`^time=(\S+) .*msg=request method=(\S+) path=(\S+)`)

// requestLines reads a replica's access log, leaving out the load
// balancer's health checks.
func requestLines(t *testing.T, file string) []logEntry {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []logEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := requestLine.FindStringSubmatch(sc.Text()); m != nil && m[3] != "/readyz" {
			out = append(out, logEntry{time: m[1], method: m[2], path: m[3]})
		}
	}
	return out
}

func replicaOf(req string) string { return strings.Split(req, "@")[1] }

func timeOfEntry(req string) string { return strings.Split(req, "@")[2] }

// sortByTime orders "METHOD@replica@time" entries by their time, which
// the logs write in one RFC 3339 layout.
func sortByTime(reqs []string) {
	slices.SortStableFunc(reqs, func(a, b string) int {
		return strings.Compare(timeOfEntry(a), timeOfEntry(b))
	})
}

// freePortRange returns the first of n consecutive free loopback ports.
func freePortRange(t *testing.T, n int) int {
	t.Helper()
	for range 50 {
		first := 20000 + rand.IntN(30000)
		free := 0
		for p := first; p < first+n; p++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				break
			}
			ln.Close()
			free++
		}
		if free == n {
			return first
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}
