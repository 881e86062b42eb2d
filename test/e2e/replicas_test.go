package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/testbackend"
)

// TestUploadAcrossReplicas sends the chunks of one upload to two sluiced
// processes on the same PostgreSQL database and bucket, alternating, as a
// load balancer may: each continues where the other left off (the parts
// and the running hash live in the shared stores), either reports the
// upload's progress, and the blob one of them completes is served by both.
func TestUploadAcrossReplicas(t *testing.T) {
	for _, b := range objectStores {
		t.Run(b.name, func(t *testing.T) {
			backend := sharedBackend(testbackend.Postgres(t), b.bucket(t))
			replicas := []*ociClient{
				newOCIClient(t, startSluiced(t, t.TempDir(), backend...).addr),
				newOCIClient(t, startSluiced(t, t.TempDir(), backend...).addr),
			}
			ctx := context.Background()
			content := randomBytes(newRand(t), 3<<20+517)
			dgst := digest.FromBytes(content)
			chunks := splitChunks(content, 7)

			loc, err := replicas[0].startUpload(ctx, "e2e/replicas")
			if err != nil {
				t.Fatal(err)
			}
			var off int64
			for i, c := range chunks[:len(chunks)-1] {
				r := replicas[(i+1)%2]
				if loc, err = r.patchChunk(ctx, pathOf(t, loc), off, c); err != nil {
					t.Fatalf("chunk %d on replica %d: %v", i, (i+1)%2, err)
				}
				off += int64(len(c))
				if got, err := replicas[i%2].uploadOffset(ctx, pathOf(t, loc)); err != nil || got != off {
					t.Fatalf("after chunk %d, the other replica reports %d bytes (%v), want %d", i, got, err, off)
				}
			}
			last := len(chunks) % 2
			if err := replicas[last].finishUpload(ctx, pathOf(t, loc), dgst, chunks[len(chunks)-1]); err != nil {
				t.Fatalf("closing PUT on replica %d: %v", last, err)
			}
			for i, r := range replicas {
				got, err := r.getBlob(ctx, "e2e/replicas", dgst)
				if err != nil || !bytes.Equal(got, content) {
					t.Fatalf("replica %d serves %d bytes (%v), want the %d pushed", i, len(got), err, len(content))
				}
			}
		})
	}
}

// pathOf is a Location's path and query, to send it to another replica.
func pathOf(t *testing.T, loc string) string {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u.RequestURI()
}

// TestTokensAcrossReplicas runs two replicas with authentication on the
// same PostgreSQL and bucket but data directories of their own: the
// signing keys are shared through the database, so a token one replica
// issued is accepted by the other, as is a streaming artifact's
// signature; both publish the same keys.
func TestTokensAcrossReplicas(t *testing.T) {
	backend := append(sharedBackend(testbackend.Postgres(t), testbackend.S3(t)),
		"SLUICE_AUTH_ENABLED=true", "SLUICE_ADMIN_PASSWORD="+authAdminPassword,
		// Reached at two addresses here, where a load balancer would give
		// them one: the token audience is the cluster's name.
		"SLUICE_AUTH_SERVICE=registry.e2e")
	a := startSluiced(t, t.TempDir(), backend...)
	b := startSluiced(t, t.TempDir(), backend...)
	admin := credential{user: "admin", password: authAdminPassword}
	token := bearerToken(t, a.addr, admin, "repository:e2e/replicas:pull,push")
	req, _ := http.NewRequest(http.MethodGet, b.url("/v2/e2e/replicas/tags/list"), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// 404: the repository does not exist; the token was accepted.
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a token from one replica on the other: %s, want 404 NAME_UNKNOWN", resp.Status)
	}
	keysOf := func(s *sluiced) string {
		resp, err := http.Get(s.url("/acr/v1/_keys"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if ka, kb := keysOf(a), keysOf(b); ka != kb {
		t.Errorf("the replicas publish different keys:\n%s\n%s", ka, kb)
	}

	// A rotation reaches both: they sign with the new key at once.
	rotate := exec.Command(sluicedBin, "rotate-keys", "--data", t.TempDir())
	rotate.Env = append(os.Environ(), backend...)
	out, err := rotate.CombinedOutput()
	if err != nil {
		t.Fatalf("sluiced rotate-keys: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`new signing key (\S+),`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("rotate-keys printed no key id:\n%s", out)
	}
	for name, r := range map[string]*sluiced{"a": a, "b": b} {
		waitFor(t, 10*time.Second, "replica "+name+" signs with the rotated key", func() bool {
			return kidOf(t, bearerToken(t, r.addr, admin, "repository:e2e/replicas:pull")) == string(m[1])
		})
	}
}

// kidOf is the key id in a JWT's header.
func kidOf(t *testing.T, token string) string {
	t.Helper()
	header, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		t.Fatalf("token header: %v", err)
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("token header: %v", err)
	}
	return h.Kid
}

// TestTokenDisabledAcrossReplicas disables a token through one replica
// while another has just accepted its password (and remembers it for
// 30 s) and an access token issued to it: the other refuses both at once,
// told by the database, rather than when the access token expires.
func TestTokenDisabledAcrossReplicas(t *testing.T) {
	backend := append(sharedBackend(testbackend.Postgres(t), testbackend.S3(t)),
		"SLUICE_AUTH_ENABLED=true", "SLUICE_ADMIN_PASSWORD="+authAdminPassword, "SLUICE_AUTH_SERVICE=registry.e2e")
	a := startSluiced(t, t.TempDir(), backend...)
	b := startSluiced(t, t.TempDir(), backend...)
	admin := newOCIClient(t, a.addr).as("admin", authAdminPassword)
	cred := createToken(t, admin, "ci-puller", "_repositories_pull")
	onB := newOCIClient(t, b.addr).as(cred.user, cred.password)
	ctx := context.Background()
	if _, _, err := onB.do(ctx, http.MethodGet, "/v2/", nil, nil, http.StatusOK); err != nil {
		t.Fatalf("the token's password on the other replica: %v", err)
	}
	// An access token one replica issued, good on the other.
	bearer := bearerToken(t, a.addr, cred, "repository:e2e/any:pull")
	withBearer := func(want int) error {
		req, _ := http.NewRequest(http.MethodGet, b.url("/v2/e2e/any/tags/list"), nil)
		req.Header.Set("Authorization", "Bearer "+bearer)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			return fmt.Errorf("bearer on the other replica: %s, want %d", resp.Status, want)
		}
		return nil
	}
	if err := withBearer(http.StatusNotFound); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.mgmt(ctx, http.MethodPatch, "/acr/v1/_tokens/ci-puller", map[string]string{"status": "disabled"}, http.StatusOK, nil); err != nil {
		t.Fatal(err)
	}
	disabled := time.Now()
	for {
		_, _, err := onB.do(ctx, http.MethodGet, "/v2/", nil, nil, http.StatusUnauthorized)
		if err == nil {
			err = withBearer(http.StatusUnauthorized)
		}
		if err == nil {
			t.Logf("password and access token refused by the other replica %v after the disable", time.Since(disabled).Round(time.Millisecond))
			return
		}
		// Well within the 30 s the other replica would remember the
		// password for if nothing told it; the time taken is reported.
		if time.Since(disabled) > 10*time.Second {
			t.Fatalf("the other replica still accepts the disabled token after 10 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDeleteSeenByEveryReplica deletes through one replica a tag and a
// manifest that another has just served (and keeps the payload of, by
// digest): the other answers 404 for both on the very next request.
func TestDeleteSeenByEveryReplica(t *testing.T) {
	backend := sharedBackend(testbackend.Postgres(t), testbackend.S3(t))
	a := newOCIClient(t, startSluiced(t, t.TempDir(), backend...).addr)
	b := newOCIClient(t, startSluiced(t, t.TempDir(), backend...).addr)
	ctx := context.Background()
	rng := newRand(t)
	kept, gone := newTestImage(t, rng, 512, 4<<10), newTestImage(t, rng, 512, 8<<10)
	a.pushImage(t, "e2e/deletes", "kept", kept)
	a.pushImage(t, "e2e/deletes", "gone", gone)
	a.pushImage(t, "e2e/deletes", "tag-only", kept)
	const mt = "application/vnd.oci.image.manifest.v1+json"
	for _, ref := range []string{"gone", gone.ManifestDigest.String(), "tag-only"} {
		if _, _, err := b.getManifest(ctx, "e2e/deletes", ref, mt); err != nil {
			t.Fatalf("the other replica before the deletes, %s: %v", ref, err)
		}
	}
	if _, _, err := a.do(ctx, http.MethodDelete, "/v2/e2e/deletes/manifests/tag-only", nil, nil, http.StatusAccepted); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.do(ctx, http.MethodDelete, "/v2/e2e/deletes/manifests/"+gone.ManifestDigest.String(), nil, nil, http.StatusAccepted); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"tag-only", "gone", gone.ManifestDigest.String()} {
		if _, _, err := b.do(ctx, http.MethodGet, "/v2/e2e/deletes/manifests/"+ref, http.Header{"Accept": {mt}}, nil, http.StatusNotFound); err != nil {
			t.Errorf("the other replica right after the delete, %s: %v", ref, err)
		}
	}
	if _, _, err := b.getManifest(ctx, "e2e/deletes", "kept", mt); err != nil {
		t.Errorf("the image kept, on the other replica: %v", err)
	}
}

// TestAutoStreamingAcrossReplicas enables auto-streaming through one
// replica and pushes images alternately through two, each running a
// worker: every image gets exactly one streaming artifact.
func TestAutoStreamingAcrossReplicas(t *testing.T) {
	backend := sharedBackend(testbackend.Postgres(t), testbackend.S3(t))
	data := t.TempDir()
	replicas := []*ociClient{
		newOCIClient(t, startSluiced(t, data, backend...).addr),
		newOCIClient(t, startSluiced(t, data, backend...).addr),
	}
	const repo = "e2e/replicas/auto"
	replicas[0].enableStreaming(t, repo)
	rng := newRand(t)
	var images []*testImage
	for i := range 4 {
		img := newTestImage(t, rng, 512, 64<<10+i)
		replicas[i%2].pushImage(t, repo, "v"+strconv.Itoa(i), img)
		images = append(images, img)
	}
	for i, img := range images {
		waitAutoConversion(t, replicas[(i+1)%2], repo, img.ManifestDigest, 1)
		// The Teleport route that tells whether an image is expanded for
		// streaming answers alike on both.
		for r, oc := range replicas {
			mount := "/mount/v1/" + repo + "/_manifests/" + img.ManifestDigest.String()
			if _, _, err := oc.do(context.Background(), http.MethodGet, mount, nil, nil, http.StatusOK); err != nil {
				t.Errorf("replica %d, %s: %v", r, mount, err)
			}
		}
	}
}
