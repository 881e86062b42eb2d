package mgmt_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/config"
)

// TestIndexesOfAManifest: GET /acr/v1/{repo}/_indexes/{digest} lists the
// indexes that list a manifest, for a pull-only token; a token of another
// repository and an anonymous caller get nothing.
func TestIndexesOfAManifest(t *testing.T) {
	tr := newTestRegistry(t, false, func(c *config.Config) {
		c.Auth.Enabled = true
		c.AdminPassword = "admin-secret-1"
	})
	admin := tr.as("admin", "admin-secret-1")
	amd := admin.pushImage("team/multi", "amd", 1)
	arm := admin.pushImage("team/multi", "arm", 2)
	index := func(children ...ocispec.Descriptor) string {
		var ds []string
		for i, c := range children {
			ds = append(ds, fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d,"platform":{"os":"linux","architecture":"a%d"}}`, c.MediaType, c.Digest, c.Size, i))
		}
		return `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + strings.Join(ds, ",") + `]}`
	}
	r := admin.do("PUT", "/v2/team/multi/manifests/multi", ocispec.MediaTypeImageIndex, []byte(index(amd, arm)))
	if r.code != http.StatusCreated {
		t.Fatalf("push index: %d %s", r.code, r.body)
	}
	indexDigest := r.header.Get("Docker-Content-Digest")

	admin.expect("POST", "/acr/v1/_scopemaps", `{"name":"other-pull","actions":["repositories/other/content/read"]}`, http.StatusCreated)
	node := tr.as("node-pull", tokenPassword(t, admin.expect("POST", "/acr/v1/_tokens", `{"name":"node-pull","scopeMapId":"_repositories_pull"}`, http.StatusCreated)))
	stranger := tr.as("stranger", tokenPassword(t, admin.expect("POST", "/acr/v1/_tokens", `{"name":"stranger","scopeMapId":"other-pull"}`, http.StatusCreated)))

	got := node.expect("GET", "/acr/v1/team/multi/_indexes/"+amd.Digest.String(), "", http.StatusOK)
	if want := fmt.Sprintf(`{"digest":%q,"indexes":[%q]}`, amd.Digest, indexDigest); strings.TrimSpace(got.body) != want {
		t.Errorf("indexes of the amd64 manifest: %s, want %s", got.body, want)
	}
	got = node.expect("GET", "/acr/v1/team/multi/_indexes/"+indexDigest, "", http.StatusOK)
	if !strings.Contains(got.body, `"indexes":[]`) {
		t.Errorf("indexes of the index itself: %s, want none", got.body)
	}
	if r := node.expect("GET", "/acr/v1/team/multi/_indexes/sha256:nothex", "", http.StatusBadRequest); errorCode(t, r) != "DIGEST_INVALID" {
		t.Errorf("bad digest: %s", r.body)
	}
	node.expect("GET", "/acr/v1/team/none/_indexes/"+amd.Digest.String(), "", http.StatusNotFound)
	stranger.expect("GET", "/acr/v1/team/multi/_indexes/"+amd.Digest.String(), "", http.StatusForbidden)
	tr.expect("GET", "/acr/v1/team/multi/_indexes/"+amd.Digest.String(), "", http.StatusUnauthorized)
}
