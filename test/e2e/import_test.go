//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The account of the source registry that TestImportFromDistribution
// starts; sourcePasswordHash is the bcrypt of sourcePassword its htpasswd
// file holds.
const (
	sourceUser         = "e2e-importer"
	sourcePassword     = "e2e-source-secret"
	sourcePasswordHash = "$2a$04$DoxzuV5qMVAcJJ/TiTBEW.n/M6SZSKVc6vL/3aHtucHOP2Z2PMnSO"
)

// importRequest is the body of POST /acr/v1/_import.
type importRequest struct {
	Source struct {
		RegistryURI string             `json:"registryUri"`
		SourceImage string             `json:"sourceImage"`
		Credentials *importCredentials `json:"credentials,omitempty"`
	} `json:"source"`
	TargetTags []string `json:"targetTags"`
	Mode       string   `json:"mode,omitempty"`
}

type importCredentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func newImportRequest(registryURI, image, mode string, targets ...string) *importRequest {
	r := &importRequest{TargetTags: targets, Mode: mode}
	r.Source.RegistryURI, r.Source.SourceImage = registryURI, image
	return r
}

// startImport posts an import and checks that it is followed at the
// registry-wide operations endpoint.
func (c *ociClient) startImport(t *testing.T, req *importRequest) string {
	t.Helper()
	loc, op := c.startOperation(t, "/acr/v1/_import", req)
	if loc != "/acr/v1/_operations/"+op.ID {
		t.Errorf("import operation %s is at %q, want /acr/v1/_operations/%s", op.ID, loc, op.ID)
	}
	return loc
}

// TestImportFromDistribution imports a two-platform index from another
// registry implementation, distribution 2.8 (Debian's docker-registry)
// with basic authentication, and expects every manifest with the digest
// it has at the source. A second NoForce import onto the same tag is
// refused, Force goes through, and an import without credentials fails
// with the source's refusal.
func TestImportFromDistribution(t *testing.T) {
	skopeo := requireTool(t, "skopeo")
	source := startDistribution(t, requireTool(t, "docker-registry"))
	reg := startSluiced(t, t.TempDir())
	oc := newOCIClient(t, reg.addr)
	cl := newClients(t)
	ctx := context.Background()
	rng := newRand(t)

	ix := newTestIndex(t, newPlatformImage(t, rng, "amd64", 32<<10, 400<<10), newPlatformImage(t, rng, "arm64", 48<<10))
	layout := filepath.Join(cl.dir, "multi")
	ix.writeLayout(t, layout, "multi")
	creds := sourceUser + ":" + sourcePassword
	cl.run(skopeo, "--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", creds,
		"oci:"+layout+":multi", "docker://"+source+"/e2e/source:multi")
	served := cl.run(skopeo, "inspect", "--raw", "--tls-verify=false", "--creds", creds, "docker://"+source+"/e2e/source:multi")
	if got := digest.FromString(served); got != ix.Digest {
		t.Fatalf("the source registry serves e2e/source:multi as %s, want %s", got, ix.Digest)
	}

	withCreds := func(r *importRequest) *importRequest {
		r.Source.Credentials = &importCredentials{Username: sourceUser, Password: sourcePassword}
		return r
	}
	sourceURI := "http://" + source
	loc := oc.startImport(t, withCreds(newImportRequest(sourceURI, "e2e/source:multi", "NoForce", "imported/multi:v1")))
	oc.waitSucceeded(t, loc, conversionTimeout)
	checkImportedIndex(t, oc, "imported/multi", "v1", ix)

	var refused struct {
		Errors []struct{ Code, Message string }
	}
	_, err := oc.mgmt(ctx, http.MethodPost, "/acr/v1/_import", withCreds(newImportRequest(sourceURI, "e2e/source:multi", "NoForce", "imported/multi:v1")),
		http.StatusConflict, &refused)
	if err != nil {
		t.Errorf("a NoForce import onto an existing tag: %v", err)
	} else if len(refused.Errors) != 1 || refused.Errors[0].Code != "TAG_ALREADY_EXISTS" {
		t.Errorf("a NoForce import onto an existing tag was refused with %+v, want TAG_ALREADY_EXISTS", refused.Errors)
	}

	loc = oc.startImport(t, withCreds(newImportRequest(sourceURI, "e2e/source:multi", "Force", "imported/multi:v1")))
	oc.waitSucceeded(t, loc, conversionTimeout)
	checkImportedIndex(t, oc, "imported/multi", "v1", ix)

	loc = oc.startImport(t, newImportRequest(sourceURI, "e2e/source:multi", "NoForce", "imported/multi:anonymous"))
	op := oc.waitOperation(t, loc, conversionTimeout, "ended", func(op operation) bool { return op.finished() })
	if op.Status != statusFailed || op.Error == nil || op.Error.Code != "IMPORT_SOURCE_FAILED" {
		t.Errorf("an import the source refuses (no credentials) ended %v, want Failed with IMPORT_SOURCE_FAILED", op)
	}
	t.Logf("import without credentials: %v", op)
	if _, _, err := oc.getManifest(ctx, "imported/multi", "anonymous", ocispec.MediaTypeImageIndex); err == nil {
		t.Errorf("the failed import created tag imported/multi:anonymous")
	}
}

// TestImportFromSluiced imports an image from a second sluiced, one with
// authentication on, into two repositories at once, one with
// auto-streaming on: the image keeps its digest in both, each blob is
// fetched from the source once, and the streaming repository converts the
// imported image as it would a pushed one.
func TestImportFromSluiced(t *testing.T) {
	skopeo := requireTool(t, "skopeo")
	origin := startSluiced(t, t.TempDir(), "SLUICE_AUTH_ENABLED=true", "SLUICE_ADMIN_USER="+sourceUser, "SLUICE_ADMIN_PASSWORD="+sourcePassword)
	reg := startSluiced(t, t.TempDir())
	cl := newClients(t)
	img := newTestImage(t, newRand(t), 16<<10, 300<<10)
	layout := filepath.Join(cl.dir, "image")
	img.writeLayout(t, layout, "v1")
	cl.run(skopeo, "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", sourceUser+":"+sourcePassword,
		"oci:"+layout+":v1", "docker://"+origin.addr+"/e2e/origin:v1")
	oc := newOCIClient(t, reg.addr)
	oc.enableStreaming(t, "imported/streamed")
	before := len(origin.accessLog())

	req := newImportRequest("http://"+origin.addr, "e2e/origin:v1", "", "imported/streamed:v1", "imported/plain:v1")
	req.Source.Credentials = &importCredentials{Username: sourceUser, Password: sourcePassword}
	loc := oc.startImport(t, req)
	oc.waitSucceeded(t, loc, conversionTimeout)
	for _, repo := range []string{"imported/streamed", "imported/plain"} {
		h, body, err := oc.getManifest(context.Background(), repo, "v1", ocispec.MediaTypeImageManifest)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, img.Manifest) || h.Get("Docker-Content-Digest") != img.ManifestDigest.String() {
			t.Errorf("%s:v1 is %s, want the source's %s", repo, h.Get("Docker-Content-Digest"), img.ManifestDigest)
		}
		fails := &failures{t: t}
		for d, b := range img.Blobs {
			checkBlob(fails, oc, repo, d, b)
		}
		fails.report()
	}
	fetched := 0
	for _, e := range origin.accessLog()[before:] {
		if e.Method == http.MethodGet && strings.HasPrefix(e.Path, "/v2/e2e/origin/blobs/") && e.Status == http.StatusOK {
			fetched++
		}
	}
	if fetched != len(img.Blobs) {
		t.Errorf("the import fetched %d blobs from the source for two targets, want each of the %d once", fetched, len(img.Blobs))
	}

	oc.waitStreamingReferrers(t, "imported/streamed", img.ManifestDigest, 1, conversionTimeout)
	if refs := oc.referrers(t, "imported/plain", img.ManifestDigest, ""); len(refs) != 0 {
		t.Errorf("imported/plain does not stream, yet its image has referrers %+v", refs)
	}
}

// checkImportedIndex checks that repo:tag is the index ix, byte for byte,
// with every platform manifest and blob of it.
func checkImportedIndex(t *testing.T, oc *ociClient, repo, tag string, ix *testIndex) {
	t.Helper()
	ctx := context.Background()
	h, body, err := oc.getManifest(ctx, repo, tag, ocispec.MediaTypeImageIndex)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, ix.Index) || h.Get("Docker-Content-Digest") != ix.Digest.String() {
		t.Fatalf("%s:%s is %s:\n%s\nwant the source's %s", repo, tag, h.Get("Docker-Content-Digest"), body, ix.Digest)
	}
	fails := &failures{t: t}
	for _, img := range ix.Images {
		if _, body, err := oc.getManifest(ctx, repo, img.ManifestDigest.String(), ocispec.MediaTypeImageManifest); err != nil || !bytes.Equal(body, img.Manifest) {
			fails.add("%s@%s (%s) was not imported as it is at the source: %v", repo, img.ManifestDigest, img.Platform.Architecture, err)
		}
		for d, b := range img.Blobs {
			checkBlob(fails, oc, repo, d, b)
		}
	}
	fails.report()
}

// startDistribution runs Debian's docker-registry (distribution 2.8) on a
// free loopback port with filesystem storage in a temporary directory and
// htpasswd authentication of sourceUser, and returns its address once it
// answers.
func startDistribution(t *testing.T, bin string) string {
	t.Helper()
	dir := t.TempDir()
	addr := freeLoopbackAddr(t)
	htpasswd := filepath.Join(dir, "htpasswd")
	writeFile(t, htpasswd, []byte(sourceUser+":"+sourcePasswordHash+"\n"))
	config := filepath.Join(dir, "config.yml")
	writeFile(t, config, fmt.Appendf(nil, `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
auth:
  htpasswd:
    realm: sluice-e2e
    path: %s
`, filepath.Join(dir, "storage"), addr, htpasswd))

	cmd := exec.Command(bin, "serve", config)
	// Settings in the environment (REGISTRY_*) would override the file.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	d := startDaemon(t, "docker-registry", cmd, nil)
	d.waitReady(t, 30*time.Second, "docker-registry asks for credentials on "+addr, func() bool {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized
	})
	return addr
}

// freeLoopbackAddr returns a loopback address with a port nothing listens
// on, for a server that cannot be told to pick one itself.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
