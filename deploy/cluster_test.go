// Package deploy holds the reference topology of a Sluice registry on
// shared backends (local-cluster.sh, the Kubernetes manifests); its test
// brings the local cluster up, pushes through HAProxy, and takes it down.
package deploy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// The script's ports: HAProxy, then a block of eight from the base port.
const clusterPorts = 9

func TestLocalCluster(t *testing.T) {
	needTools(t)
	sluicedDir := t.TempDir()
	build := exec.Command("go", "build", "-o", sluicedDir, "github.com/sluicehq/sluice/cmd/sluiced")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build sluiced: %v\n%s", err, out)
	}
	lbPort := freePorts(t, clusterPorts)
	c := &cluster{
		t:     t,
		state: filepath.Join(t.TempDir(), "cluster"),
		env: append(os.Environ(),
			"SLUICE_CLUSTER_BIN="+sluicedDir,
			"SLUICE_CLUSTER_PORT="+strconv.Itoa(lbPort),
			"SLUICE_CLUSTER_BASE_PORT="+strconv.Itoa(lbPort+1)),
		url: fmt.Sprintf("http://127.0.0.1:%d", lbPort),
	}
	c.env = append(c.env, "SLUICE_CLUSTER_DIR="+c.state)

	start := time.Now()
	out := c.run("up")
	t.Logf("up in %s", time.Since(start).Round(time.Millisecond))
	pids := c.pids()
	downDone := false
	t.Cleanup(func() {
		if !downDone {
			c.run("down")
		}
	})
	m := regexp.MustCompile(`admin:\s+admin / (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("up printed no admin password:\n%s", out)
	}
	if n := len(pids); n != 8 {
		t.Fatalf("up recorded %d processes, want 8 (PostgreSQL, the object store, 3 replicas, 2 workers, HAProxy)", n)
	}
	if status := c.run("status"); strings.Count(status, "running, pid") != 8 || !strings.Contains(status, ": ready") {
		t.Errorf("status:\n%s", status)
	}

	reg := &registry{t: t, base: c.url, client: &http.Client{Timeout: 20 * time.Second}}
	reg.login("admin", m[1], "cluster/test")
	sent := reg.pushAndPull("cluster/test")

	// A request is told by its method and path in the replicas' logs:
	// those of the requests no other request shares.
	count := map[string]int{}
	for _, s := range sent {
		count[s]++
	}
	var unique []string
	for _, s := range sent {
		if count[s] == 1 {
			unique = append(unique, s)
		}
	}
	servedBy := c.servedBy(unique)
	for i := 1; i < len(sent); i++ {
		a, b := sent[i-1], sent[i]
		if count[a] > 1 || count[b] > 1 {
			continue
		}
		if servedBy[a] == servedBy[b] {
			t.Errorf("consecutive requests %q and %q both served by %s: HAProxy did not balance each request", a, b, servedBy[a])
		}
	}
	seen := map[string]bool{}
	for _, r := range servedBy {
		seen[r] = true
	}
	if len(seen) != 3 {
		t.Errorf("requests served by %v, want all three replicas", servedBy)
	}

	// A replica killed in the middle of 20 clients' pushes.
	reg.login("admin", m[1], "cluster/failover")
	c.pushThroughKill(reg, pids["replica-2"])

	start = time.Now()
	c.run("down")
	downDone = true
	t.Logf("down in %s", time.Since(start).Round(time.Millisecond))
	if _, err := os.Stat(c.state); !os.IsNotExist(err) {
		t.Errorf("down left the state directory %s (%v)", c.state, err)
	}
	for name, p := range pids {
		if p.running() {
			t.Errorf("down left %s (pid %d) running", name, p.pid)
		}
	}
	for port := lbPort; port < lbPort+clusterPorts-1; port++ {
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
			t.Errorf("port %d still taken after down: %v", port, err)
		} else {
			ln.Close()
		}
	}
}

// needTools skips the test, or fails it under make test, without HAProxy,
// PostgreSQL or Azurite.
func needTools(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("haproxy")
	testenv.Need(t, err == nil, "haproxy not found: make test-deps installs it")
	initdb, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(initdb) == 0 {
		_, err := exec.LookPath("initdb")
		testenv.Need(t, err == nil, "PostgreSQL's initdb not found: make test-deps installs postgresql")
	}
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		t.Fatal(err)
	}
	azurite := filepath.Join(strings.SplitN(strings.TrimSpace(string(gopath)), string(os.PathListSeparator), 2)[0],
		"sluice-test-tools", "azurite", "node_modules", ".bin", "azurite-blob")
	if _, err := exec.LookPath("azurite-blob"); err != nil {
		_, err := os.Stat(azurite)
		testenv.Need(t, err == nil, "azurite-blob not found on PATH or at %s: make test-deps installs it", azurite)
	}
}

// freePorts finds n consecutive loopback ports nothing listens on, and
// returns the first.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for range 50 {
		first := 20000 + rand.IntN(30000)
		var lns []net.Listener
		for p := first; p < first+n; p++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if len(lns) == n {
			return first
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}

type cluster struct {
	t          *testing.T
	state, url string
	env        []string
}

// run runs the script with the command and returns its output; a failure
// fails the test with the output and, for up, the logs.
func (c *cluster) run(command string) string {
	c.t.Helper()
	cmd := exec.Command("./local-cluster.sh", command)
	cmd.Env = c.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("local-cluster.sh %s: %v\n%s", command, err, out.String())
	}
	return out.String()
}

// process is a PID the script recorded, with the start time that tells it
// from a later process with the same PID.
type process struct {
	pid     int
	started string
}

func (c *cluster) pids() map[string]process {
	c.t.Helper()
	files, err := filepath.Glob(filepath.Join(c.state, "pids", "*"))
	if err != nil {
		c.t.Fatal(err)
	}
	pids := map[string]process{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			c.t.Fatal(err)
		}
		var p process
		if _, err := fmt.Sscan(string(b), &p.pid, &p.started); err != nil {
			c.t.Fatalf("%s: %q: %v", f, b, err)
		}
		pids[filepath.Base(f)] = p
	}
	return pids
}

func (p process) running() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	fields := strings.Fields(rest)
	return len(fields) > 19 && fields[19] == p.started
}

var accessLine = regexp.MustCompile(`msg=request method=(\S+) path=(\S+)`)

// servedBy finds, in the replicas' access logs, which replica served each
// request ("METHOD /path"); it polls, since a replica logs a request just
// after answering it.
func (c *cluster) servedBy(requests []string) map[string]string {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		found := map[string]string{}
		for i := 1; i <= 3; i++ {
			name := fmt.Sprintf("replica-%d", i)
			f, err := os.Open(filepath.Join(c.state, "logs", name+".log"))
			if err != nil {
				c.t.Fatal(err)
			}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if m := accessLine.FindStringSubmatch(sc.Text()); m != nil {
					path := m[2]
					if p, err := strconv.Unquote(path); err == nil {
						path = p
					}
					found[m[1]+" "+path] = name
				}
			}
			f.Close()
		}
		var missing []string
		for _, r := range requests {
			if found[r] == "" {
				missing = append(missing, r)
			}
		}
		if len(missing) == 0 {
			return found
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("requests in no replica's access log: %q", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// registry is a client of the distribution API, through one connection
// kept alive, as a registry client's is.
type registry struct {
	t      *testing.T
	base   string
	client *http.Client
	token  string
	// sent is every request made with the token, as "METHOD /path".
	sent []string
}

// login gets a token for repo as registry clients do: the challenge of
// /v2/, then the token endpoint it names, with the user's password.
func (r *registry) login(user, password, repo string) {
	r.t.Helper()
	resp, err := r.client.Get(r.base + "/v2/")
	if err != nil {
		r.t.Fatal(err)
	}
	resp.Body.Close()
	params := map[string]string{}
	challenge, ok := strings.CutPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ")
	if resp.StatusCode != http.StatusUnauthorized || !ok {
		r.t.Fatalf("GET /v2/: %s, WWW-Authenticate %q; want a bearer challenge", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
	for _, kv := range regexp.MustCompile(`(\w+)="([^"]*)"`).FindAllStringSubmatch(challenge, -1) {
		params[kv[1]] = kv[2]
	}
	q := url.Values{"service": {params["service"]}, "scope": {"repository:" + repo + ":push,pull"}}
	req, _ := http.NewRequest(http.MethodGet, params["realm"]+"?"+q.Encode(), nil)
	req.SetBasicAuth(user, password)
	resp, err = r.client.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK || tok.Token == "" {
		r.t.Fatalf("token from %s: %s (%v)", params["realm"], resp.Status, err)
	}
	r.token = tok.Token
}

// do sends a request with the token and checks the status.
func (r *registry) do(method, target string, header http.Header, body []byte, want int) *http.Response {
	r.t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		r.t.Fatal(err)
	}
	u = (&url.URL{Scheme: "http", Host: strings.TrimPrefix(r.base, "http://")}).ResolveReference(u)
	req, err := http.NewRequest(method, u.String(), bytes.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		r.t.Fatalf("%s %s: %s, want %d: %s", method, u.Path, resp.Status, want, b)
	}
	r.sent = append(r.sent, method+" "+u.Path)
	return resp
}

// pushBlob uploads b as POST then PUT, two requests that HAProxy sends to
// two replicas, and returns its digest.
func (r *registry) pushBlob(repo string, b []byte) string {
	r.t.Helper()
	digest := fmt.Sprintf("sha256:%x", sha256.Sum256(b))
	resp := r.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil, http.StatusAccepted)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		r.t.Fatal(err)
	}
	q := loc.Query()
	q.Set("digest", digest)
	loc.RawQuery = q.Encode()
	r.do(http.MethodPut, loc.String(), http.Header{"Content-Type": {"application/octet-stream"}}, b, http.StatusCreated)
	return digest
}

// pushAndPull pushes an image of one layer and reads it back; it returns
// the requests it made, in order.
func (r *registry) pushAndPull(repo string) []string {
	r.t.Helper()
	layer := bytes.Repeat([]byte("sluice cluster layer\n"), 1000)
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layerDigest := r.pushBlob(repo, layer)
	configDigest := r.pushBlob(repo, config)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": len(config)},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": len(layer)}},
	})
	manifestDigest := fmt.Sprintf("sha256:%x", sha256.Sum256(manifest))
	ct := http.Header{"Content-Type": {"application/vnd.oci.image.manifest.v1+json"}}
	r.do(http.MethodPut, "/v2/"+repo+"/manifests/v1", ct, manifest, http.StatusCreated)

	accept := http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json"}}
	r.do(http.MethodGet, "/v2/"+repo+"/manifests/v1", accept, nil, http.StatusOK)
	r.do(http.MethodHead, "/v2/"+repo+"/manifests/"+manifestDigest, accept, nil, http.StatusOK)
	r.do(http.MethodHead, "/v2/"+repo+"/blobs/"+configDigest, nil, nil, http.StatusOK)
	r.do(http.MethodGet, "/v2/"+repo+"/blobs/"+layerDigest, nil, nil, http.StatusOK)
	r.do(http.MethodGet, "/v2/"+repo+"/tags/list", nil, nil, http.StatusOK)
	return r.sent
}
