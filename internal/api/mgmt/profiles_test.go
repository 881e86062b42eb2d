package mgmt_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/config"
)

// TestStartupProfiles stores, reads, replaces and deletes the startup
// profile of a blob, and refuses profiles that do not fit it.
func TestStartupProfiles(t *testing.T) {
	tr := newTestRegistry(t, false, nil)
	// 660,000 bytes: a profile may cover half of them (more than the 256 KiB
	// any layer's may).
	blob := tr.pushBlob("team/app", []byte(strings.Repeat("chunk data ", 60000)))
	tr.pushBlob("other", []byte("elsewhere"))
	path := "/acr/v1/team/app/_profiles/" + blob.Digest.String()

	if r := tr.expect("GET", path, "", http.StatusNotFound); errorCode(t, r) != "PROFILE_UNKNOWN" {
		t.Fatalf("no profile yet: %s", r.body)
	}
	tr.expect("PUT", path, `{"ranges":[[4096,1000],[0,2000],[9000,100]]}`, http.StatusNoContent)
	got := tr.expect("GET", path, "", http.StatusOK)
	if !strings.Contains(got.body, `"ranges":[[4096,1000],[0,2000],[9000,100]]`) || !strings.Contains(got.body, `"digest":"`+blob.Digest.String()) ||
		!strings.Contains(got.body, `"updatedAt":"20`) {
		t.Fatalf("stored profile reads back as %s", got.body)
	}
	tr.expect("PUT", path, `{"ranges":[[100,50]]}`, http.StatusNoContent)
	if got := tr.expect("GET", path, "", http.StatusOK); !strings.Contains(got.body, `"ranges":[[100,50]]`) {
		t.Fatalf("a second profile does not replace the first: %s", got.body)
	}

	for _, tc := range []struct{ name, body, code string }{
		{"no ranges", `{"ranges":[]}`, "INVALID_REQUEST"},
		{"past the end", `{"ranges":[[659990,20]]}`, "INVALID_REQUEST"},
		{"negative offset", `{"ranges":[[-1,20]]}`, "INVALID_REQUEST"},
		{"empty range", `{"ranges":[[0,0]]}`, "INVALID_REQUEST"},
		{"repeated offset", `{"ranges":[[0,10],[0,10]]}`, "INVALID_REQUEST"},
		{"overlapping", `{"ranges":[[100,50],[0,120]]}`, "INVALID_REQUEST"},
		{"more than half the blob", `{"ranges":[[0,200000],[200000,200000]]}`, "INVALID_REQUEST"},
		{"not a pair", `{"ranges":[[1,2,3]]}`, "INVALID_REQUEST"},
		{"unknown field", `{"ranges":[[0,10]],"extra":1}`, "INVALID_REQUEST"},
	} {
		r := tr.do("PUT", path, "application/json", []byte(tc.body))
		if r.code != http.StatusBadRequest || errorCode(t, r) != tc.code {
			t.Errorf("%s: %d %s, want 400 %s", tc.name, r.code, r.body, tc.code)
		}
	}
	big := `{"ranges":[[0,10]]` + strings.Repeat(" ", 4<<20) + `}` // over the 2.6 MiB a profile body may hold
	if r := tr.do("PUT", path, "application/json", []byte(big)); r.code != http.StatusBadRequest || !strings.Contains(r.body, "body larger than") {
		t.Errorf("a body over the limit: %d %s, want 400 saying it is too large", r.code, r.body)
	}
	if got := tr.expect("GET", path, "", http.StatusOK); !strings.Contains(got.body, `"ranges":[[100,50]]`) {
		t.Fatalf("a refused profile changed the stored one: %s", got.body)
	}

	// The blob must be in the repository named.
	tr.expect("GET", "/acr/v1/other/_profiles/"+blob.Digest.String(), "", http.StatusNotFound)
	tr.expect("PUT", "/acr/v1/other/_profiles/"+blob.Digest.String(), `{"ranges":[[0,10]]}`, http.StatusNotFound)
	tr.expect("GET", "/acr/v1/team/app/_profiles/not-a-digest", "", http.StatusBadRequest)
	tr.expect("POST", path, `{"ranges":[[0,10]]}`, http.StatusMethodNotAllowed)

	tr.expect("DELETE", path, "", http.StatusNoContent)
	tr.expect("GET", path, "", http.StatusNotFound)
	tr.expect("DELETE", path, "", http.StatusNotFound)
}

// TestStartupProfilesNeedPull checks that a pull-only token may read and
// give a profile but not delete one, and that a token of another
// repository gets nothing.
func TestStartupProfilesNeedPull(t *testing.T) {
	tr := newTestRegistry(t, false, func(c *config.Config) {
		c.Auth.Enabled = true
		c.AdminPassword = "admin-secret-1"
	})
	admin := func(method, path, body string, want int) response {
		t.Helper()
		return tr.as("admin", "admin-secret-1").expect(method, path, body, want)
	}
	blob := tr.as("admin", "admin-secret-1").pushBlob("team/app", []byte(strings.Repeat("x", 4096)))
	path := "/acr/v1/team/app/_profiles/" + blob.Digest.String()
	admin("POST", "/acr/v1/_scopemaps", `{"name":"other-pull","actions":["repositories/other/content/read"]}`, http.StatusCreated)
	node := tokenPassword(t, admin("POST", "/acr/v1/_tokens", `{"name":"node-pull","scopeMapId":"_repositories_pull"}`, http.StatusCreated))
	stranger := tokenPassword(t, admin("POST", "/acr/v1/_tokens", `{"name":"stranger","scopeMapId":"other-pull"}`, http.StatusCreated))

	asNode := tr.as("node-pull", node)
	asNode.expect("PUT", path, `{"ranges":[[0,100]]}`, http.StatusNoContent)
	asNode.expect("GET", path, "", http.StatusOK)
	asNode.expect("DELETE", path, "", http.StatusForbidden)
	tr.as("stranger", stranger).expect("GET", path, "", http.StatusForbidden)
	tr.as("stranger", stranger).expect("PUT", path, `{"ranges":[[0,10]]}`, http.StatusForbidden)
	tr.expect("GET", path, "", http.StatusUnauthorized)
	admin("DELETE", path, "", http.StatusNoContent)
}

func tokenPassword(t *testing.T, r response) string {
	t.Helper()
	v := r.json(t)
	creds, _ := v["credentials"].(map[string]any)
	pws, _ := creds["passwords"].([]any)
	if len(pws) == 0 {
		t.Fatalf("token without passwords: %s", r.body)
	}
	return fmt.Sprint(pws[0].(map[string]any)["value"])
}
