//go:build linux

package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/trust"
)

// TestPodmanPushFollowsTheGuide follows the guide's Option B, `docker
// push`, with Podman standing in for docker (alias docker=podman; no
// docker daemon here): log in, tag a local image for the registry, push it
// into a repository that streams, and find the image's streaming artifact
// and, beside it, the registry's signature of that artifact.
func TestPodmanPushFollowsTheGuide(t *testing.T) {
	podman := requireTool(t, "podman")
	reg := startSluiced(t, t.TempDir(), "SLUICE_AUTH_ENABLED=true", "SLUICE_ADMIN_PASSWORD="+authAdminPassword)
	admin := newOCIClient(t, reg.addr).as("admin", authAdminPassword)
	cl := podmanClients(t)
	const repo = "guide/podman"
	admin.enableStreaming(t, repo)

	// The user's local image: pulled into podman's store from a layout,
	// whose path podman makes the image's name, which must be lower case
	// (t.TempDir's holds the test's name).
	src, err := os.MkdirTemp("", "podman-src-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(src) })
	newTestImage(t, newRand(t), 4<<10, 200<<10).writeLayout(t, src, "v1")
	cl.run(podman, "login", "--tls-verify=false", "-u", "admin", "-p", authAdminPassword, reg.addr)
	id := strings.TrimSpace(cl.run(podman, "pull", "-q", "oci:"+src+":v1"))
	ref := reg.addr + "/" + repo + ":v1"
	cl.run(podman, "tag", id, ref)
	digestFile := filepath.Join(cl.dir, "pushed-digest")
	cl.run(podman, "push", "--tls-verify=false", "--digestfile", digestFile, ref)

	b, err := os.ReadFile(digestFile)
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("podman's digest file: %v", err)
	}
	h, _, err := admin.getManifest(context.Background(), repo, "v1", "application/vnd.oci.image.manifest.v1+json", mediaTypeDockerManifest)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Get("Docker-Content-Digest"); got != pushed.String() {
		t.Fatalf("%s:v1 is %s, podman pushed %s", repo, got, pushed)
	}

	streamed := admin.waitStreamingReferrers(t, repo, pushed, 1, 2*time.Minute)[0]
	sigs := admin.referrers(t, repo, pushed, artifactTypeStreamingSignature)
	if len(sigs) != 1 {
		t.Fatalf("%s@%s has %d signature referrers beside its streaming artifact, want 1: %+v", repo, pushed, len(sigs), sigs)
	}
	var keys trust.JWKS
	if _, err := admin.mgmt(context.Background(), http.MethodGet, "/acr/v1/_keys", nil, http.StatusOK, &keys); err != nil {
		t.Fatal(err)
	}
	ks, _ := keys.KeySet()
	st, _, err := ks.Verify(sigs[0].Annotations[trust.AnnotationSignature])
	if err != nil {
		t.Fatalf("the signature beside the streaming artifact does not verify with the registry's keys: %v", err)
	}
	if st.Subject != pushed || st.Manifest != streamed.Digest {
		t.Errorf("the signature vouches that %s was made from %s, want %s from %s", st.Manifest, st.Subject, streamed.Digest, pushed)
	}
}

// podmanClients runs podman rootful but with everything of its own: a
// home, a vfs store (no overlay mounts to clean up), a runtime and
// temporary directory, an events log and an empty registries.conf, so
// that it reads and writes nothing of the machine's containers setup.
func podmanClients(t *testing.T) *clients {
	t.Helper()
	cl := newClients(t)
	dir := t.TempDir()
	files := map[string]string{
		"storage.conf": "[storage]\ndriver = \"vfs\"\nrunroot = \"" + filepath.Join(dir, "runroot") + "\"\ngraphroot = \"" + filepath.Join(dir, "graphroot") + "\"\n",
		"containers.conf": "[engine]\ntmp_dir = \"" + filepath.Join(dir, "tmp") + "\"\nevents_logger = \"file\"\nevents_logfile_path = \"" +
			filepath.Join(dir, "events.log") + "\"\ncgroup_manager = \"cgroupfs\"\n",
		"registries.conf": "",
	}
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), []byte(content))
	}
	cl.env = append(cl.env,
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"CONTAINERS_STORAGE_CONF="+filepath.Join(dir, "storage.conf"),
		"CONTAINERS_CONF="+filepath.Join(dir, "containers.conf"),
		"CONTAINERS_REGISTRIES_CONF="+filepath.Join(dir, "registries.conf"),
	)
	return cl
}
