//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/internal/streaming"
)

// The secret file of the trust tests' images: the victim's true bytes, and
// what an attacker would have nodes run instead.
const (
	secretPath   = "/data/secret.txt"
	trueSecret   = "the bytes the image's digest names\n"
	forgedSecret = "FORGED: bytes an attacker chose!!\n"
)

// trustEnv is one registry and one node for the trust tests.
type trustEnv struct {
	t      *testing.T
	reg    *sluiced
	data   string
	admin  *ociClient
	n      *nodeEnv
	skopeo string
	opts   snapshotterOptions
}

// TestStreamingTrust runs what an attacker with push rights would try, and
// what an operator rotating keys would do, against a node:
//
//   - a token that may push but lacks streaming/write cannot store a
//     streaming artifact (basic auth: 403; bearer: a 401 asking for
//     streaming_write);
//   - a forged streaming artifact planted in the registry (its TOC claims
//     the victim layer's DiffID) is not mounted under the default trust:
//     the layer is downloaded and the container reads the true bytes;
//   - under trust: any (the explicit opt-out) the node mounts it and serves
//     the forged bytes until the whole-layer check catches it: from then on
//     every read fails, cached pages and O_DIRECT alike, and the next
//     container gets the downloaded original;
//   - a registry key rotation keeps old artifacts and makes new ones
//     trusted; a key set replaced wholesale is refused until
//     `sluice-snapshotter trust`;
//   - an artifact converted client-side and signed with a CI key streams
//     under trust: keys, and not under trust: registry from a registry that
//     publishes no keys.
func TestStreamingTrust(t *testing.T) {
	testenv.FUSE(t)
	skopeo := requireTool(t, "skopeo")
	requireTool(t, "runc")
	var flavor containerdFlavor
	flavors := containerdFlavors()
	for _, f := range flavors {
		if f.missing == "" {
			flavor = f
		}
	}
	testenv.Need(t, flavor.name != "", "no containerd to run: %s; %s", flavors[0].missing, flavors[1].missing)
	nodeBinaries(t)
	e := &trustEnv{t: t, skopeo: skopeo, data: t.TempDir()}
	e.reg = startSluiced(t, e.data, "SLUICE_AUTH_ENABLED=true", "SLUICE_ADMIN_USER="+nodeAdmin, "SLUICE_ADMIN_PASSWORD="+nodeAdminPassword)
	e.admin = newOCIClient(t, e.reg.addr).as(nodeAdmin, nodeAdminPassword)
	password := createPullToken(t, e.admin, nodeToken)
	// Background completion, and with it the whole-layer check, waits
	// for reads to be quiet for 5 s: time for the test to read what
	// trust: any serves before the verdict.
	e.opts = snapshotterOptions{registry: e.reg.addr, user: nodeToken, password: password, cacheMaxBytes: 1 << 30, backgroundDelay: "5s"}
	e.n = startNode(t, flavor, e.opts, nil)

	t.Run("a pusher cannot store a streaming artifact", e.testPusherRefused)
	t.Run("a planted forgery is not mounted", e.testForgeryUntrusted)
	t.Run("trust any: the forgery is caught and stops at once", e.testForgeryUnderTrustAny)
	t.Run("key rotation and a replaced key set", e.testKeyRotation)
	t.Run("a CI key's client-side artifact", e.testCIKey)
}

// pushImage pushes a small runnable image whose secret file holds secret,
// into repo (with auto-streaming on when stream is set, waiting for the
// artifact).
func (e *trustEnv) pushImage(name, repo, secret string, stream bool) *nodeImage {
	t := e.t
	t.Helper()
	img := newNodeImage(t, name, repo, ocispec.ImageConfig{Cmd: []string{"cat", secretPath}},
		map[string][]byte{strings.TrimPrefix(secretPath, "/"): []byte(secret)})
	if stream {
		e.admin.enableStreaming(t, repo)
	}
	cl := newClients(t)
	src := filepath.Join(cl.dir, name)
	img.writeLayout(t, src, "v1")
	cl.run(e.skopeo, "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false",
		"--dest-creds", nodeAdmin+":"+nodeAdminPassword, "oci:"+src+":v1", "docker://"+img.ref(e.reg.addr))
	if stream {
		e.admin.waitStreamingReferrers(t, repo, img.ManifestDigest, 1, conversionTimeout)
	}
	return img
}

// forgery is a streaming artifact an attacker made for a victim image:
// honest conversions of its first layers, and for its last the conversion
// of the attacker's layer with the TOC's DiffID rewritten to the victim's.
type forgery struct {
	blobs    map[digest.Digest][]byte
	manifest []byte
}

func forge(t *testing.T, victim, attacker *nodeImage) *forgery {
	t.Helper()
	var cfg ocispec.Image
	if err := json.Unmarshal(victim.Blobs[victim.Config.Digest], &cfg); err != nil {
		t.Fatal(err)
	}
	f := &forgery{blobs: map[digest.Digest][]byte{}}
	var layers []ocispec.Descriptor
	last := len(victim.Layers) - 1
	for i, l := range victim.Layers {
		src := victim.Blobs[l.Digest]
		if i == last {
			src = attacker.Blobs[attacker.Layers[len(attacker.Layers)-1].Digest]
		}
		var out bytes.Buffer
		res, err := streaming.Convert(context.Background(), bytes.NewReader(src), &out, streaming.Options{})
		if err != nil {
			t.Fatal(err)
		}
		blob, d := out.Bytes(), res.Descriptor()
		if i == last {
			blob, d = rewriteDiffID(t, blob, cfg.RootFS.DiffIDs[i])
		}
		d.Annotations[streaming.AnnotationSourceDigest] = l.Digest.String()
		f.blobs[d.Digest] = blob
		layers = append(layers, d)
	}
	m := streaming.Manifest(victim.Config, layers, victim.descriptor(), victim.Platform)
	var err error
	if f.manifest, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	return f
}

// rewriteDiffID rewrites a converted layer's TOC to claim diffID, with a
// new TOC frame, footer and digests: all an attacker needs is the format's
// documentation.
func rewriteDiffID(t *testing.T, blob []byte, diffID digest.Digest) ([]byte, ocispec.Descriptor) {
	t.Helper()
	footer, err := streaming.ParseFooter(blob[len(blob)-streaming.FooterSize:], int64(len(blob)))
	if err != nil {
		t.Fatal(err)
	}
	toc, err := streaming.DecodeTOC(blob[footer.TOCOffset:footer.TOCOffset+footer.TOCSize], footer.TOCOffset, streaming.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	toc.DiffID = diffID
	frame, jsonSize := tocFrame(t, toc)
	f := streaming.Footer{TOCOffset: footer.TOCOffset, TOCSize: int64(len(frame)), TOCUncompressedSize: jsonSize,
		TOCDigest: sha256.Sum256(frame), Major: footer.Major, Minor: footer.Minor}
	fb, _ := f.MarshalBinary()
	out := append(append(append([]byte(nil), blob[:footer.TOCOffset]...), frame...), fb...)
	tocDigest := digest.NewDigestFromBytes(digest.SHA256, f.TOCDigest[:])
	return out, ocispec.Descriptor{MediaType: streaming.MediaTypeLayer, Digest: digest.FromBytes(out), Size: int64(len(out)),
		Annotations: map[string]string{
			streaming.AnnotationTOCDigest: tocDigest.String(),
			streaming.AnnotationTOCOffset: fmt.Sprint(f.TOCOffset),
			streaming.AnnotationTOCSize:   fmt.Sprint(f.TOCSize),
		}}
}

// upload pushes the forgery's blobs as c (blobs are only content: anyone
// who may push may store them) and returns the manifest's digest.
func (f *forgery) upload(t *testing.T, c *ociClient, repo string) digest.Digest {
	t.Helper()
	for _, b := range f.blobs {
		if _, err := c.pushBlob(context.Background(), repo, b, 1); err != nil {
			t.Fatalf("push a converted layer: %v", err)
		}
	}
	return digest.FromBytes(f.manifest)
}

// plant stores the forgery as the admin, who may store streaming artifacts
// but never signs them: what a compromised pusher with streaming/write, or
// a registry without Sluice's rule, would hold.
func (e *trustEnv) plant(victim, attacker *nodeImage) {
	t := e.t
	t.Helper()
	f := forge(t, victim, attacker)
	d := f.upload(t, e.admin, victim.repo)
	if err := e.admin.putManifest(context.Background(), victim.repo, d.String(), ocispec.MediaTypeImageManifest, f.manifest); err != nil {
		t.Fatalf("plant the forgery: %v", err)
	}
}

func (e *trustEnv) testPusherRefused(t *testing.T) {
	victim := e.pushImage("victim-push", "e2e/trust/victim-push", trueSecret, false)
	attackerImg := e.pushImage("attacker-push", "e2e/trust/attacker-push", forgedSecret, false)
	pusher := createToken(t, e.admin, "e2e-trust-pusher", "_repositories_push")
	attacker := e.admin.as(pusher.user, pusher.password)
	f := forge(t, victim, attackerImg)
	d := f.upload(t, attacker, victim.repo)

	// Basic credentials: the identity is known to lack the action.
	err := attacker.putManifest(context.Background(), victim.repo, d.String(), ocispec.MediaTypeImageManifest, f.manifest)
	var se *statusError
	if !errors.As(err, &se) || se.Got != http.StatusForbidden || !strings.Contains(se.Body, "DENIED") || !strings.Contains(se.Body, "streaming/write") {
		t.Fatalf("the pusher's forged manifest: %v, want 403 DENIED naming streaming/write", err)
	}

	// A bearer token is told what to ask for, and the token service does
	// not grant it to this identity.
	tok := bearerToken(t, e.reg.addr, pusher, "repository:"+victim.repo+":pull,push,streaming_write")
	req, _ := http.NewRequest(http.MethodPut, e.reg.url("/v2/"+victim.repo+"/manifests/"+d.String()), bytes.NewReader(f.manifest))
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if challenge := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized ||
		!strings.Contains(challenge, `error="insufficient_scope"`) || !strings.Contains(challenge, "streaming_write") {
		t.Fatalf("the forged manifest with a bearer token: %s %q, want 401 asking for streaming_write", resp.Status, challenge)
	}
	if refs := e.admin.referrers(t, victim.repo, victim.ManifestDigest, ""); len(refs) != 0 {
		t.Fatalf("the victim has referrers after refused pushes: %v", refs)
	}
}

// bearerToken asks the token service for scope with cred's password.
func bearerToken(t *testing.T, addr string, cred credential, scope string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/oauth2/token?scope="+url.QueryEscape(scope), nil)
	req.SetBasicAuth(cred.user, cred.password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		Token string `json:"token"`
		Scope string `json:"scope"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.Token == "" {
		t.Fatalf("token for %s: %s %v", scope, resp.Status, err)
	}
	if strings.Contains(tr.Scope, "streaming_write") {
		t.Fatalf("the token service granted %s to %s", tr.Scope, cred.user)
	}
	return tr.Token
}

func (e *trustEnv) testForgeryUntrusted(t *testing.T) {
	victim := e.pushImage("victim-a", "e2e/trust/victim-a", trueSecret, false)
	attacker := e.pushImage("attacker-a", "e2e/trust/attacker-a", forgedSecret, false)
	e.plant(victim, attacker)
	before := e.n.sn.metrics()[`sluice_snapshotter_fallbacks_total{reason="untrusted"}`]
	res := e.n.pull(victim)
	for i, l := range res.Layers {
		if l.Streamed {
			t.Errorf("layer %d %s of the forged artifact was streamed under trust: registry", i, l.Digest)
		}
	}
	if got := e.n.sn.metrics()[`sluice_snapshotter_fallbacks_total{reason="untrusted"}`] - before; got != float64(len(victim.Layers)) {
		t.Errorf("fallbacks for an untrusted artifact: %v, want %d", got, len(victim.Layers))
	}
	if lines := e.n.sn.logLines("layer not streamed; containerd downloads it", "layer="+victim.Layers[0].Digest.String()); len(lines) != 1 ||
		!strings.Contains(lines[0], "signed by a key this node trusts") {
		t.Errorf("the snapshotter's fallback line does not say the artifact is untrusted: %q", lines)
	}
	if got := e.n.run(victim, "e2e-trust-a", "cat "+secretPath); got != trueSecret {
		t.Errorf("the container read %q, want the true bytes %q", got, trueSecret)
	}
}

func (e *trustEnv) testForgeryUnderTrustAny(t *testing.T) {
	victim := e.pushImage("victim-b", "e2e/trust/victim-b", trueSecret, false)
	attacker := e.pushImage("attacker-b", "e2e/trust/attacker-b", forgedSecret, false)
	e.plant(victim, attacker)
	o := e.opts
	o.trust = "any"
	e.n.sn.configure(o)
	defer e.n.sn.configure(e.opts)

	res := e.n.pull(victim)
	for i, l := range res.Layers {
		if !l.Streamed {
			t.Fatalf("layer %d %s was not streamed under trust: any", i, l.Digest)
		}
	}
	// The risk trust: any takes: until the whole layer is checked, the
	// forged bytes are what the container reads.
	if got := e.n.run(victim, "e2e-trust-b1", "cat "+secretPath); got != forgedSecret {
		t.Errorf("under trust: any the container read %q; the forgery was expected to be served until the layer check", got)
	}
	file := ""
	for _, mp := range fuseMountsUnder(t, e.n.sn.dir) {
		if _, err := os.Stat(filepath.Join(mp, secretPath)); err == nil {
			file = filepath.Join(mp, secretPath)
		}
	}
	if file == "" {
		t.Fatal("no streamed layer mount holds the secret file")
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != forgedSecret {
		t.Fatalf("reading the mount before the verdict: %q %v", b, err)
	}
	if !poll(time.Minute, func() bool { return strings.Contains(e.n.sn.managerLog(), "STREAMED LAYER IS BAD") }) {
		t.Fatalf("the FUSE manager did not find the layer bad:\n%s", e.n.sn.managerLog())
	}
	// The kernel's cached pages go with the verdict, a moment after it.
	waitFor(t, 10*time.Second, "reads of the bad layer fail", func() bool {
		_, err := os.ReadFile(file)
		return errors.Is(err, syscall.EIO)
	})
	if err := readDirect(file); !errors.Is(err, syscall.EIO) {
		t.Errorf("an O_DIRECT read of the bad layer: %v, want EIO", err)
	}
	if got := e.n.sn.metrics()["sluice_snapshotter_layers_bad_total"]; got < 1 {
		t.Errorf("sluice_snapshotter_layers_bad_total is %v", got)
	}
	// The next container of the image runs on the downloaded original.
	if got := e.n.run(victim, "e2e-trust-b2", "cat "+secretPath); got != trueSecret {
		t.Errorf("the next container read %q, want the true bytes", got)
	}
	if got := e.n.sn.metrics()["sluice_snapshotter_bad_layers_replaced_total"]; got != 1 {
		t.Errorf("sluice_snapshotter_bad_layers_replaced_total is %v, want 1", got)
	}
}

// readDirect reads a file with O_DIRECT, past the page cache.
func readDirect(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	buf := make([]byte, 1<<20) // large allocations are page-aligned, as O_DIRECT wants
	_, err = unix.Read(fd, buf)
	return err
}

// streamed pulls img and reports whether every layer was streamed.
func (e *trustEnv) streamed(img *nodeImage) bool {
	res := e.n.pull(img)
	for _, l := range res.Layers {
		if !l.Streamed {
			return false
		}
	}
	return true
}

// restartRegistry stops sluiced, runs between, and starts it again on the
// same address (the node knows the registry by it).
func (e *trustEnv) restartRegistry(between func()) {
	t := e.t
	t.Helper()
	addr := e.reg.addr
	if err := e.reg.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	between()
	cmd := exec.Command(sluicedBin, "serve", "--listen", addr, "--data", e.data)
	cmd.SysProcAttr = dieWithTest()
	cmd.Env = append(os.Environ(), "SLUICE_LOG_FORMAT=json", "SLUICE_LOG_ACCESS=true", "SLUICE_AUTH_ENABLED=true",
		"SLUICE_ADMIN_USER="+nodeAdmin, "SLUICE_ADMIN_PASSWORD="+nodeAdminPassword)
	e.reg = runSluiced(t, cmd)
}

func (e *trustEnv) testKeyRotation(t *testing.T) {
	before := e.pushImage("signed-1", "e2e/trust/signed-1", trueSecret, true)
	older := e.pushImage("signed-2", "e2e/trust/signed-2", trueSecret, true)
	if !e.streamed(before) {
		t.Fatal("an image the registry signed was not streamed")
	}
	cl := newClients(t)
	e.restartRegistry(func() { cl.run(sluicedBin, "rotate-keys", "--data", e.data) })
	var keys struct {
		Keys []struct {
			Kid         string `json:"kid"`
			Endorsement string `json:"endorsement"`
		} `json:"keys"`
	}
	if _, body, err := newOCIClient(t, e.reg.addr).do(context.Background(), http.MethodGet, "/acr/v1/_keys", nil, nil, http.StatusOK); err != nil || json.Unmarshal(body, &keys) != nil || len(keys.Keys) != 2 {
		t.Fatalf("the published keys after a rotation: %v %s", err, body)
	}
	after := e.pushImage("signed-3", "e2e/trust/signed-3", trueSecret, true)
	if !e.streamed(older) {
		t.Error("an artifact signed with the old key, which is still published, was not streamed")
	}
	if !e.streamed(after) {
		t.Errorf("an artifact signed with the rotated key was not streamed: %s", e.n.sn.logText())
	}

	// A key set replaced wholesale: nothing vouches for it.
	e.restartRegistry(func() {
		if err := os.RemoveAll(filepath.Join(e.data, "keys")); err != nil {
			t.Fatal(err)
		}
	})
	stranger := e.pushImage("signed-4", "e2e/trust/signed-4", trueSecret, true)
	if e.streamed(stranger) {
		t.Fatal("an artifact signed by a replaced key set was streamed before the node trusted it")
	}
	if lines := e.n.sn.logLines("layer not streamed; containerd downloads it", "layer="+stranger.Layers[0].Digest.String()); len(lines) != 1 ||
		!strings.Contains(lines[0], "sluice-snapshotter trust "+e.reg.addr) {
		t.Errorf("the fallback does not say how to trust the new keys: %q", lines)
	}
	out := e.n.cl.run(snapshotterBin, "trust", e.reg.addr, "--root", e.n.sn.root, "--config", e.n.sn.config)
	if !strings.Contains(out, "trusted signing keys of "+e.reg.addr) {
		t.Errorf("sluice-snapshotter trust printed %q", out)
	}
	trusted := e.pushImage("signed-5", "e2e/trust/signed-5", trueSecret, true)
	if !e.streamed(trusted) {
		t.Error("after sluice-snapshotter trust, an artifact signed by the new key set was not streamed")
	}
}

func (e *trustEnv) testCIKey(t *testing.T) {
	dist := startDistribution(t, requireTool(t, "docker-registry"))
	cl := newClients(t)
	cl.env = append(cl.env, "SLUICE_USERNAME="+sourceUser, "SLUICE_PASSWORD="+sourcePassword)
	key := filepath.Join(t.TempDir(), "ci-signing.pem")
	push := func(name string) *nodeImage {
		img := newNodeImage(t, name, "e2e/trust/"+name, ocispec.ImageConfig{Cmd: []string{"cat", secretPath}},
			map[string][]byte{strings.TrimPrefix(secretPath, "/"): []byte(trueSecret)})
		src := filepath.Join(cl.dir, name)
		img.writeLayout(t, src, "v1")
		cl.run(e.skopeo, "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false",
			"--dest-creds", sourceUser+":"+sourcePassword, "oci:"+src+":v1", "docker://"+img.ref(dist))
		cl.run(sluiceBin, "convert", "--sign-key", key, img.ref(dist))
		return img
	}
	pullFrom := func(img *nodeImage) bool {
		out := cl.run(sluiceBin, "pull", img.ref(dist), "--address", e.n.sock, "--namespace", nodeNamespace, "--plain-http")
		var res pullResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("sluice pull: %v\n%s", err, out)
		}
		for _, l := range res.Layers {
			if !l.Streamed {
				return false
			}
		}
		return len(res.Layers) > 0
	}
	withKeys := e.opts
	withKeys.others = map[string]registryOptions{dist: {user: sourceUser, password: sourcePassword, trust: "keys", trustKeys: []string{key + ".pub"}}}
	e.n.sn.configure(withKeys)
	defer e.n.sn.configure(e.opts)
	ciImage := push("ci-1")
	if !pullFrom(ciImage) {
		t.Errorf("an artifact signed with the CI key was not streamed under trust: keys:\n%s", e.n.sn.logText())
	}

	byRegistry := e.opts
	byRegistry.others = map[string]registryOptions{dist: {user: sourceUser, password: sourcePassword}}
	e.n.sn.configure(byRegistry)
	other := push("ci-2")
	if pullFrom(other) {
		t.Error("an artifact signed with the CI key was streamed under trust: registry, from a registry that publishes no keys")
	}
	if lines := e.n.sn.logLines("layer not streamed; containerd downloads it", "layer="+other.Layers[0].Digest.String()); len(lines) != 1 ||
		!strings.Contains(lines[0], "publishes no signing keys") {
		t.Errorf("the fallback does not say the registry publishes no keys: %q", lines)
	}
}

// tocFrame encodes toc as a layer's TOC frame (zstd in a skippable frame)
// and returns it with the size of its JSON.
func tocFrame(t *testing.T, toc *streaming.TOC) ([]byte, int64) {
	t.Helper()
	js, err := json.Marshal(toc)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(nil)
	payload := enc.EncodeAll(js, nil)
	enc.Close()
	frame := binary.LittleEndian.AppendUint32(nil, 0x184D2A5A) // the TOC's skippable frame
	frame = binary.LittleEndian.AppendUint32(frame, uint32(len(payload)))
	return append(frame, payload...), int64(len(js))
}
