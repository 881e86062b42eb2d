//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/snapshotter"
	"github.com/sluicehq/sluice/internal/testenv"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestNodeCRIProxy runs the node as a Kubernetes node whose pods bring
// their own pull secrets: kubelet's image service is the snapshotter's CRI
// proxy, and the only credentials that may pull private/* are those a pull
// hands to CRI (crictl pull --creds, as kubelet does with a pod's secret).
// Neither the snapshotter's config nor docker's config.json has any, and
// the registry refuses anonymous pulls. The image streams; its layers keep
// reading after the snapshotter and its FUSE manager are restarted (the
// credentials were kept, encrypted, on disk); a new password given with
// the next pull replaces the old one; and the credentials of a pull of
// private/app never serve private/other, which they could read, as the
// registry's access log shows.
func TestNodeCRIProxy(t *testing.T) {
	testenv.FUSE(t)
	skopeo := requireTool(t, "skopeo")
	crictl := requireTool(t, "crictl")
	requireTool(t, "runc")
	flavors := containerdFlavors()
	f := flavors[0]
	testenv.Need(t, f.missing == "", "%s", f.missing)
	nodeBinaries(t)

	reg := startSluiced(t, t.TempDir(), "SLUICE_AUTH_ENABLED=true", "SLUICE_ADMIN_USER="+nodeAdmin, "SLUICE_ADMIN_PASSWORD="+nodeAdminPassword)
	admin := newOCIClient(t, reg.addr).as(nodeAdmin, nodeAdminPassword)
	ctx := context.Background()
	if _, err := admin.mgmt(ctx, http.MethodPost, "/acr/v1/_scopemaps", map[string]any{
		"name": "e2e-cri-private-pull", "actions": []string{"repositories/private/*/content/read"},
	}, http.StatusCreated, nil); err != nil {
		t.Fatal(err)
	}
	tok := createToken(t, admin, "e2e-cri-puller", "e2e-cri-private-pull")

	// Eight files of 1 MiB, each a chunk of its own: reading one fetches
	// one eighth of the data layer.
	rng := newRand(t)
	echo := ocispec.ImageConfig{Cmd: []string{"echo", "streamed-ok"}}
	app := newNodeImage(t, "criapp", "private/app", echo, dataFiles(rng, "data/part", "f", 8, 1<<20))
	other := newNodeImage(t, "criother", "private/other", echo, dataFiles(rng, "data/part", "f", 2, 1<<20))
	cl := newClients(t)
	for _, img := range []*nodeImage{app, other} {
		admin.enableStreaming(t, img.repo)
		src := filepath.Join(cl.dir, img.name)
		img.writeLayout(t, src, "v1")
		cl.run(skopeo, "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false",
			"--dest-creds", nodeAdmin+":"+nodeAdminPassword, "oci:"+src+":v1", "docker://"+img.ref(reg.addr))
		admin.waitStreamingReferrers(t, img.repo, img.ManifestDigest, 1, conversionTimeout)
	}
	if _, _, err := newOCIClient(t, reg.addr).getManifest(ctx, app.repo, "v1"); err == nil {
		t.Fatal("an anonymous client may read private/app")
	}

	// No credentials anywhere on the node: not in the snapshotter's
	// config, not in docker's (a HOME of its own), not in containerd's.
	// The proxy's upstream is containerd's socket, whose path is known
	// once containerd runs: a link made then, in a short directory (the
	// sockets' paths must fit in sun_path).
	criDir, err := os.MkdirTemp("", "cri-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(criDir) })
	o := snapshotterOptions{registry: reg.addr, cacheMaxBytes: 1 << 30, backgroundDelay: "1h", startupProfilesOff: true,
		criListen: filepath.Join(criDir, "cri.sock"), criUpstream: filepath.Join(criDir, "containerd.sock")}
	n := startNode(t, f, o, &criSetup{registry: reg.addr, sandbox: app.ref(reg.addr)})
	if err := os.Symlink(n.sock, o.criUpstream); err != nil {
		t.Fatal(err)
	}
	// containerd dials the snapshotter again, with a backoff, once it is
	// back; a snapshot prepared (Walk is answered from containerd's own
	// metadata) shows it is.
	probes := 0
	snapshotterBack := func() {
		t.Helper()
		waitFor(t, time.Minute, "containerd reaches the snapshotter again", func() bool {
			probes++
			key := fmt.Sprintf("e2e-probe-%d", probes)
			ctr := []string{"--address", n.sock, "--namespace", "k8s.io", "snapshots", "--snapshotter", "sluice"}
			if _, _, err := n.cl.try(f.ctr, append(ctr, "prepare", key)...); err != nil {
				return false
			}
			n.cl.run(f.ctr, append(ctr, "rm", key)...)
			return true
		})
	}

	proxy := func(args ...string) string {
		t.Helper()
		return n.cl.run(crictl, append([]string{"--runtime-endpoint", "unix://" + o.criListen, "--image-endpoint", "unix://" + o.criListen, "--timeout", "2m"}, args...)...)
	}
	metric := func(name string) float64 { return n.sn.metrics()[name] }
	fallbacks := func() string { return pickMetrics(n.sn.metrics(), "fallbacks_total") }
	fetched := func() float64 {
		m := n.sn.metrics()
		return m[`sluice_snapshotter_fetched_bytes_total{kind="on_demand"}`] + m[`sluice_snapshotter_fetched_bytes_total{kind="background"}`] +
			m[`sluice_snapshotter_fetched_bytes_total{kind="prefetch"}`]
	}

	// Runtime calls go through the proxy too.
	if v := proxy("version"); !strings.Contains(v, "RuntimeName:  containerd") {
		t.Errorf("crictl version through the proxy printed:\n%s", v)
	}
	before := metric("sluice_snapshotter_layers_streamed_total")
	proxy("pull", "--creds", tok.String(), app.ref(reg.addr))
	if got := metric("sluice_snapshotter_layers_streamed_total") - before; got != float64(len(app.Layers)) {
		t.Fatalf("the pull through the CRI proxy streamed %v layers, want all %d (fallbacks: %s)", got, len(app.Layers), fallbacks())
	}
	if mounts := fuseMountsUnder(t, n.sn.dir); len(mounts) < len(app.Layers) {
		t.Errorf("%d FUSE mounts after the pull, want at least %d", len(mounts), len(app.Layers))
	}
	var imageBytes int64
	for _, l := range app.Layers {
		imageBytes += l.Size
	}
	if images := proxy("images"); !strings.Contains(images, app.repo) {
		t.Errorf("crictl images through the proxy does not list %s:\n%s", app.repo, images)
	}

	// A container of the image reads one file of the data layer.
	out := n.cl.run(f.ctr, "--address", n.sock, "--namespace", "k8s.io", "run", "--rm", "--snapshotter", "sluice", app.ref(reg.addr), "cri-proxy-run",
		"/bin/busybox", "sh", "-c", "busybox cat /etc/streamed.txt && busybox sha256sum /data/part/f000")
	if want := streamedText + app.sums["/data/part/f000"] + "  /data/part/f000\n"; out != want {
		t.Errorf("the container printed %q, want %q", out, want)
	}
	if got := fetched(); got <= 0 || got > float64(imageBytes)/3 {
		t.Errorf("%v bytes fetched after the pull and a start reading 1 MiB, of an image of %d bytes; want some, far below", got, imageBytes)
	}
	t.Logf("image of %d bytes; fetched %v; metrics: %s", imageBytes, fetched(), pickMetrics(n.sn.metrics(), "layers_streamed", "fetched_bytes", "layers_mounted",
		"mount_seconds_count", "mount_seconds_sum", "fetched_before_start_bytes_count", "fetched_before_start_bytes_sum"))
	// Each layer's time to mount, and what it had fetched when the
	// container was created, once.
	if got := metric("sluice_snapshotter_mount_seconds_count"); got != float64(len(app.Layers)) {
		t.Errorf("sluice_snapshotter_mount_seconds counted %v mounts, want %d", got, len(app.Layers))
	}
	if got := metric("sluice_snapshotter_fetched_before_start_bytes_count"); got != float64(len(app.Layers)) {
		t.Errorf("sluice_snapshotter_fetched_before_start_bytes counted %v layers, want %d", got, len(app.Layers))
	}

	// The credentials are on disk, root-only, and not in plain text.
	credDir := snapshotter.PullCredentialsDir(n.sn.root)
	for _, name := range []string{"pull-credentials.enc", "node.key"} {
		st, err := os.Stat(filepath.Join(credDir, name))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", name, err, st.Mode().Perm())
		}
	}
	if b, err := os.ReadFile(filepath.Join(credDir, "pull-credentials.enc")); err != nil || bytes.Contains(b, []byte(tok.password)) || bytes.Contains(b, []byte(tok.user)) {
		t.Errorf("the kept credentials are readable as they are (%v)", err)
	}
	kept := func() snapshotter.PullCredential {
		c, ok, err := snapshotter.OpenPullCredentials(credDir, "").Lookup(reg.addr, app.repo)
		if err != nil || !ok {
			t.Fatalf("no credentials kept for %s: %v", app.repo, err)
		}
		return c
	}
	if c := kept(); c.Username != tok.user || c.Password != tok.password {
		t.Errorf("kept %s's credentials as user %q", app.repo, c.Username)
	}

	// A restart of the snapshotter and of its FUSE manager (as after a
	// reboot: every mount comes back from local state) fetches with the
	// credentials kept on disk.
	restart := func() {
		t.Helper()
		n.sn.d.kill(t)
		stopProcesses(t, "FUSE manager", n.sn.managerPIDs())
		n.sn.start()
		waitFor(t, time.Minute, "the streamed layers are mounted again", func() bool {
			return len(fuseMountsUnder(t, n.sn.dir)) >= len(app.Layers)
		})
		snapshotterBack()
	}
	readFile := func(path string) {
		t.Helper()
		for _, mp := range fuseMountsUnder(t, n.sn.dir) {
			b, err := os.ReadFile(filepath.Join(mp, path))
			if os.IsNotExist(err) {
				continue
			}
			if err != nil {
				t.Fatalf("reading %s from the mounted layer: %v", path, err)
			}
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != app.sums["/"+path] {
				t.Fatalf("%s read from the mounted layer has other bytes", path)
			}
			return
		}
		t.Fatalf("no mounted layer has %s", path)
	}
	restart()
	readFile("data/part/f003")
	// (The new FUSE manager counts from 0; the file was never read.)
	if got := metric(`sluice_snapshotter_fetched_bytes_total{kind="on_demand"}`); got <= 0 {
		t.Errorf("the FUSE manager started again fetched %v bytes on demand, want the chunks of the file read", got)
	}

	// A new password: the old one is refused at once; the next pull
	// brings the new one, which the fetches use from then on.
	var regenerated struct {
		Credentials struct {
			Passwords []struct {
				Name  string `json:"name"`
				Value string `json:"value"`
			} `json:"passwords"`
		} `json:"credentials"`
	}
	if _, err := admin.mgmt(ctx, http.MethodPost, "/acr/v1/_tokens/"+tok.user+"/_credentials", map[string]any{"name": "password1"}, http.StatusOK, &regenerated); err != nil {
		t.Fatal(err)
	}
	rotated := tok
	for _, p := range regenerated.Credentials.Passwords {
		if p.Name == "password1" {
			rotated.password = p.Value
		}
	}
	if rotated.password == "" || rotated.password == tok.password {
		t.Fatalf("regenerating password1 gave %+v", regenerated)
	}
	waitFor(t, 30*time.Second, "the old password is refused", func() bool {
		_, _, err := newOCIClient(t, reg.addr).as(tok.user, tok.password).getManifest(ctx, app.repo, "v1")
		return err != nil
	})
	proxy("pull", "--creds", rotated.String(), app.ref(reg.addr))
	if c := kept(); c.Password != rotated.password {
		t.Error("the pull with the new password did not replace the kept one")
	}
	// A pull with a wrong password fails and leaves the working one.
	if _, _, err := n.cl.try(crictl, "--image-endpoint", "unix://"+o.criListen, "--timeout", "1m", "pull", "--creds", tok.String(), app.ref(reg.addr)); err == nil {
		t.Error("a pull with the old password succeeded")
	}
	// From this restart on, the FUSE manager also completes the mounted
	// layers in the background once reads are quiet, with the new
	// password.
	o.backgroundDelay = "1s"
	n.sn.configure(o)
	restart()
	readFile("data/part/f005")
	if c := kept(); c.Password != rotated.password {
		t.Error("the kept password changed after a refused pull")
	}
	waitFor(t, 2*time.Minute, "the mounted layers are completed in the background", func() bool {
		return metric("sluice_snapshotter_layers_completed_total") >= float64(len(app.Layers))
	})
	if got := metric(`sluice_snapshotter_fetched_bytes_total{kind="background"}`); got <= 0 {
		t.Errorf("%v bytes fetched in the background", got)
	}

	// private/other is pulled by containerd with the token (straight to
	// containerd's CRI, as a pod on a node without the proxy would be):
	// the snapshotter has no credentials of its own for that repository,
	// and private/app's, which could read it, are not used. Its layers
	// are downloaded, for the reason "unauthorized", and none of the
	// snapshotter's lookups of the repository's streaming artifacts
	// succeeded.
	unauthorized := `sluice_snapshotter_fallbacks_total{reason="unauthorized"}`
	before = metric(unauthorized)
	logged := len(reg.accessLog())
	n.cl.run(crictl, "--image-endpoint", "unix://"+n.sock, "--timeout", "2m", "pull", "--creds", rotated.String(), other.ref(reg.addr))
	if got := metric(unauthorized) - before; got != float64(len(other.Layers)) {
		t.Errorf("pulling %s counted %v layers unauthorized, want %d (fallbacks: %s)", other.repo, got, len(other.Layers), fallbacks())
	}
	referrers, refused := 0, 0
	for _, e := range reg.accessLog()[logged:] {
		if !strings.HasPrefix(e.Path, "/v2/"+other.repo+"/referrers/") {
			continue
		}
		referrers++
		if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden {
			refused++
		} else {
			t.Errorf("the snapshotter read %s's referrers (%s %s: %d) with credentials not given for it", other.repo, e.Method, e.Path, e.Status)
		}
	}
	if referrers == 0 || refused != referrers {
		t.Errorf("%d requests for %s's referrers, %d refused; want some, all refused", referrers, other.repo, refused)
	}
	for _, e := range reg.accessLog() {
		if strings.HasPrefix(e.Path, "/v2/"+app.repo+"/") && (e.Status == http.StatusForbidden) {
			t.Errorf("a request for %s was refused: %s %s %d", app.repo, e.Method, e.Path, e.Status)
		}
	}

	// sluice node status says the same, per layer.
	var status []struct {
		Image              string `json:"image"`
		Streamed           int    `json:"streamed"`
		Downloaded         int    `json:"downloaded"`
		FetchedBeforeStart *int64 `json:"fetchedBeforeStartBytes"`
		Layers             []struct {
			Served             string  `json:"served"`
			Reason             string  `json:"reason"`
			MountSeconds       float64 `json:"mountSeconds"`
			FetchedBeforeStart *int64  `json:"fetchedBeforeStartBytes"`
		} `json:"layers"`
	}
	out = n.cl.run(sluiceBin, "node", "status", "--root", n.sn.root)
	if err := json.Unmarshal([]byte(out), &status); err != nil {
		t.Fatalf("sluice node status printed what is not its JSON: %v\n%s", err, out)
	}
	seen := 0
	for _, img := range status {
		switch img.Image {
		case app.ref(reg.addr):
			seen++
			if img.Streamed != len(app.Layers) || img.Downloaded != 0 {
				t.Errorf("node status: %s has %d layers streamed, %d downloaded; want all %d streamed", img.Image, img.Streamed, img.Downloaded, len(app.Layers))
			}
			// The container started with the TOCs and little else fetched.
			if img.FetchedBeforeStart == nil || *img.FetchedBeforeStart <= 0 || *img.FetchedBeforeStart >= imageBytes {
				t.Errorf("node status: %s fetched %v bytes before its container started; want some, below the image's %d", img.Image, img.FetchedBeforeStart, imageBytes)
			}
			for i, l := range img.Layers {
				if l.MountSeconds <= 0 || l.MountSeconds > 120 || l.FetchedBeforeStart == nil || *l.FetchedBeforeStart <= 0 {
					t.Errorf("node status: layer %d of %s mounted in %vs, fetched %v before start; want both above 0", i, img.Image, l.MountSeconds, l.FetchedBeforeStart)
				}
			}
		case other.ref(reg.addr):
			seen++
			if img.Downloaded != len(other.Layers) {
				t.Errorf("node status: %s has %d layers downloaded, want %d", img.Image, img.Downloaded, len(other.Layers))
			}
			for _, l := range img.Layers {
				if l.MountSeconds != 0 || l.FetchedBeforeStart != nil {
					t.Errorf("node status: a downloaded layer of %s has a mount time (%v) or bytes fetched before start (%v)", img.Image, l.MountSeconds, l.FetchedBeforeStart)
				}
				if l.Served != "downloaded" || l.Reason != "unauthorized" {
					t.Errorf("node status: a layer of %s is %s (%s), want downloaded for the reason unauthorized", img.Image, l.Served, l.Reason)
				}
			}
		}
	}
	if seen != 2 {
		t.Errorf("node status does not list both images:\n%s", out)
	}
	// crictl inspecti through the proxy shows it too (crictl puts each
	// entry of the verbose information beside "status").
	var inspected map[string]json.RawMessage
	out = proxy("inspecti", app.ref(reg.addr))
	if err := json.Unmarshal([]byte(out), &inspected); err != nil {
		t.Fatalf("crictl inspecti printed what is not JSON: %v\n%s", err, out)
	}
	var served struct {
		Streamed, Downloaded int
		FetchedBeforeStart   *int64 `json:"fetchedBeforeStartBytes"`
		Layers               []struct {
			MountSeconds float64 `json:"mountSeconds"`
		} `json:"layers"`
	}
	raw := inspected[snapshotter.StreamingInfoKey]
	var text string
	if json.Unmarshal(raw, &text) == nil { // crictl may show it as a string
		raw = json.RawMessage(text)
	}
	if err := json.Unmarshal(raw, &served); err != nil || served.Streamed != len(app.Layers) || served.Downloaded != 0 {
		t.Errorf("crictl inspecti's info %s: %s (%v); want %d layers streamed:\n%s", snapshotter.StreamingInfoKey, raw, err, len(app.Layers), out)
	}
	if served.FetchedBeforeStart == nil || *served.FetchedBeforeStart <= 0 || len(served.Layers) == 0 || served.Layers[0].MountSeconds <= 0 {
		t.Errorf("crictl inspecti's info %s lacks the bytes fetched before start or the time to mount: %s", snapshotter.StreamingInfoKey, raw)
	}

	// A kubelet credential provider plugin gives the node credentials for
	// a second registry, which nothing else on the node has; its answer is
	// kept for its cache duration (an hour, per registry), so each process
	// asks it once.
	t.Run("credential provider", func(t *testing.T) {
		tool := newNodeImage(t, "critool", "team/tool", echo, dataFiles(rng, "data/part", "f", 2, 1<<20))
		reg2, password2 := startStreamingRegistry(t, tool)
		bin, calls := t.TempDir(), filepath.Join(t.TempDir(), "calls")
		goTool, err := goCommand()
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(goTool, "build", "-o", filepath.Join(bin, "test-provider"), "github.com/sluicehq/sluice/internal/snapshotter/testdata/credprovider").CombinedOutput(); err != nil {
			t.Fatalf("go build the credential provider plugin: %v\n%s", err, out)
		}
		providers := filepath.Join(t.TempDir(), "providers.yaml")
		writeFile(t, providers, []byte(fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
- name: test-provider
  apiVersion: credentialprovider.kubelet.k8s.io/v1
  matchImages: [%q]
  defaultCacheDuration: 1m
  args: [Registry, 1h]
  env:
  - {name: CALLS_FILE, value: %q}
  - {name: PROVIDER_USERNAME, value: %q}
  - {name: PROVIDER_PASSWORD, value: %q}
`, reg2.addr, calls, nodeToken, password2)))
		o.providersConfig, o.providersBinDir = providers, bin
		n.sn.configure(o)
		restart()
		before := metric("sluice_snapshotter_layers_streamed_total")
		n.cl.run(crictl, "--image-endpoint", "unix://"+n.sock, "--timeout", "2m", "pull", "--creds", nodeToken+":"+password2, tool.ref(reg2.addr))
		if got := metric("sluice_snapshotter_layers_streamed_total") - before; got != float64(len(tool.Layers)) {
			t.Errorf("the pull from the second registry streamed %v layers, want all %d (fallbacks: %s)", got, len(tool.Layers), fallbacks())
		}
		b, err := os.ReadFile(calls)
		if err != nil {
			t.Fatalf("the plugin was never called: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		for _, l := range lines {
			if l != reg2.addr+"/"+tool.repo {
				t.Errorf("the plugin was asked for %q, want only %s/%s", l, reg2.addr, tool.repo)
			}
		}
		// The snapshotter and its FUSE manager each ask once.
		if len(lines) < 1 || len(lines) > 2 {
			t.Errorf("the plugin was called %d times, want once by the snapshotter and at most once by its FUSE manager", len(lines))
		}
	})
}
