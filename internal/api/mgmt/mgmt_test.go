package mgmt_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/config"
)

func TestRepositoryEndpoints(t *testing.T) {
	tr := newTestRegistry(t, false, nil)
	img := tr.pushImage("team/app", "v1", 1)
	tr.pushImage("team/app", "v2", 2)
	tr.pushImage("other", "x", 3)

	tests := []struct {
		name, method, path, body string
		wantCode                 int
		wantError                string
		wantBody                 []string
		wantHeader               map[string]string
	}{
		{name: "catalog", method: "GET", path: "/acr/v1/_catalog", wantCode: 200, wantBody: []string{`"repositories":["other","team/app"]`}},
		{name: "catalog page", method: "GET", path: "/acr/v1/_catalog?n=1", wantCode: 200, wantBody: []string{`["other"]`},
			wantHeader: map[string]string{"Link": `</acr/v1/_catalog?last=other&n=1>; rel="next"`}},
		{name: "catalog bad n", method: "GET", path: "/acr/v1/_catalog?n=x", wantCode: 400, wantError: "INVALID_REQUEST"},
		{name: "repository show", method: "GET", path: "/acr/v1/team/app", wantCode: 200, wantBody: []string{
			`"imageName":"team/app"`, `"manifestCount":2`, `"tagCount":2`,
			`"changeableAttributes":{"deleteEnabled":true,"writeEnabled":true,"readEnabled":true,"listEnabled":true,"teleportEnabled":false}`}},
		{name: "repository unknown", method: "GET", path: "/acr/v1/nope", wantCode: 404, wantError: "NAME_UNKNOWN"},
		{name: "repository invalid name", method: "GET", path: "/acr/v1/No/Way", wantCode: 400, wantError: "NAME_INVALID"},
		{name: "repository bad method", method: "PUT", path: "/acr/v1/team/app", wantCode: 405, wantError: "UNSUPPORTED"},
		{name: "patch unknown field", method: "PATCH", path: "/acr/v1/team/app", body: `{"writeEnabeld":false}`, wantCode: 400, wantError: "INVALID_REQUEST"},
		{name: "patch bad JSON", method: "PATCH", path: "/acr/v1/team/app", body: `{`, wantCode: 400, wantError: "INVALID_REQUEST"},
		{name: "patch unknown repository", method: "PATCH", path: "/acr/v1/nope", body: `{"writeEnabled":false}`, wantCode: 404, wantError: "NAME_UNKNOWN"},
		{name: "tags", method: "GET", path: "/acr/v1/team/app/_tags", wantCode: 200, wantBody: []string{`"name":"v1"`, `"name":"v2"`, `"digest":"` + img.Digest.String()}},
		{name: "tags page", method: "GET", path: "/acr/v1/team/app/_tags?n=1", wantCode: 200, wantBody: []string{`"name":"v1"`},
			wantHeader: map[string]string{"Link": `</acr/v1/team/app/_tags?last=v1&n=1>; rel="next"`}},
		{name: "tag show", method: "GET", path: "/acr/v1/team/app/_tags/v1", wantCode: 200, wantBody: []string{`"tag":{"name":"v1"`}},
		{name: "tag unknown", method: "GET", path: "/acr/v1/team/app/_tags/v9", wantCode: 404, wantError: "MANIFEST_UNKNOWN"},
		{name: "manifests", method: "GET", path: "/acr/v1/team/app/_manifests", wantCode: 200, wantBody: []string{`"architecture":"amd64"`, `"os":"linux"`, `"configMediaType":"application/vnd.oci.image.config.v1+json"`, `"tags":["v1"]`}},
		{name: "manifest show by digest", method: "GET", path: "/acr/v1/team/app/_manifests/" + img.Digest.String(), wantCode: 200, wantBody: []string{`"manifest":{"digest":"` + img.Digest.String()}},
		{name: "manifest show by tag", method: "GET", path: "/acr/v1/team/app/_manifests/v1", wantCode: 200, wantBody: []string{img.Digest.String()}},
		{name: "manifest unknown", method: "GET", path: "/acr/v1/team/app/_manifests/sha256:" + strings.Repeat("0", 64), wantCode: 404, wantError: "MANIFEST_UNKNOWN"},
		{name: "usage", method: "GET", path: "/acr/v1/_usage", wantCode: 200, wantBody: []string{`"name":"Size"`, `"limit":536870912000`, `"unit":"Bytes"`}},
		{name: "unknown endpoint", method: "GET", path: "/acr/v1/team/app/_nothing", wantCode: 404},
		{name: "streaming setting never configured", method: "GET", path: "/acr/v1/fresh/_streaming", wantCode: 200, wantBody: []string{`"convertPushedImages":false`}},
		{name: "streaming setting without value", method: "POST", path: "/acr/v1/fresh/_streaming", body: `{}`, wantCode: 400, wantError: "INVALID_REQUEST"},
		{name: "streaming setting other format", method: "POST", path: "/acr/v1/fresh/_streaming", body: `{"convertPushedImages":true,"conversionFormat":"estargz"}`, wantCode: 400, wantError: "INVALID_REQUEST"},
		{name: "operation unknown", method: "GET", path: "/acr/v1/team/app/_operations/nope", wantCode: 404, wantError: "OPERATION_UNKNOWN"},
		{name: "cancel unknown", method: "POST", path: "/acr/v1/team/app/_operations/nope:cancel", wantCode: 404, wantError: "OPERATION_UNKNOWN"},
		{name: "conversion of a missing image", method: "POST", path: "/acr/v1/team/app/_streaming/nope", wantCode: 404, wantError: "RESOURCE_NOT_FOUND"},
		{name: "no conversion running", method: "GET", path: "/acr/v1/team/app/_streaming/" + img.Digest.String(), wantCode: 404, wantError: "OPERATION_UNKNOWN"},
		{name: "teleport not enabled", method: "GET", path: "/mount/v1/team/app/_manifests/" + img.Digest.String(), wantCode: 404, wantError: "TELEPORT_NOT_ENABLED"},
		{name: "deleted catalog empty", method: "GET", path: "/acr/v1/_deleted/_catalog", wantCode: 200, wantBody: []string{`"repositories":[]`}},
		{name: "import without source", method: "POST", path: "/acr/v1/_import", body: `{"targetTags":["a:b"]}`, wantCode: 400, wantError: "INVALID_REQUEST"},
		{name: "import bad mode", method: "POST", path: "/acr/v1/_import", body: `{"source":{"registryUri":"x","sourceImage":"y:z"},"targetTags":["a:b"],"mode":"Maybe"}`, wantCode: 400, wantError: "INVALID_REQUEST"},
		{name: "import bad target", method: "POST", path: "/acr/v1/_import", body: `{"source":{"registryUri":"x","sourceImage":"y:z"},"targetTags":["notag"]}`, wantCode: 400, wantError: "INVALID_REQUEST"},
		{name: "import over an existing tag", method: "POST", path: "/acr/v1/_import", body: `{"source":{"registryUri":"x","sourceImage":"y:z"},"targetTags":["team/app:v1"]}`, wantCode: 409, wantError: "TAG_ALREADY_EXISTS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			r := tr.do(tc.method, tc.path, "application/json", body)
			if r.code != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", r.code, tc.wantCode, r.body)
			}
			if tc.wantError != "" {
				if got := errorCode(t, r); got != tc.wantError {
					t.Errorf("error %s, want %s", got, tc.wantError)
				}
			}
			for _, want := range tc.wantBody {
				if !strings.Contains(r.body, want) {
					t.Errorf("body lacks %s:\n%s", want, r.body)
				}
			}
			for k, v := range tc.wantHeader {
				if got := r.header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestChangeableAttributesAreEnforced(t *testing.T) {
	tr := newTestRegistry(t, false, nil)
	img := tr.pushImage("locked", "v1", 1)
	other := tr.pushImage("locked", "v2", 2)

	// writeEnabled: false on the repository refuses pushes, mounts and deletes.
	tr.expect("PATCH", "/acr/v1/locked", `{"writeEnabled":false}`, 200)
	r := tr.do("POST", "/v2/locked/blobs/uploads/", "", nil)
	if r.code != 403 || errorCode(t, r) != "DENIED" {
		t.Fatalf("upload into a write-disabled repository: %d %s", r.code, r.body)
	}
	r = tr.do("DELETE", "/v2/locked/manifests/v2", "", nil)
	if r.code != 403 {
		t.Fatalf("delete in a write-disabled repository: %d", r.code)
	}
	tr.expect("PATCH", "/acr/v1/locked", `{"changeableAttributes":{"writeEnabled":true}}`, 200)

	// readEnabled: false refuses pulls of manifests and blobs.
	tr.expect("PATCH", "/acr/v1/locked", `{"readEnabled":false}`, 200)
	if r := tr.do("GET", "/v2/locked/manifests/v1", "", nil); r.code != 403 {
		t.Fatalf("pull from a read-disabled repository: %d", r.code)
	}
	tr.expect("PATCH", "/acr/v1/locked", `{"readEnabled":true}`, 200)

	// listEnabled: false hides the repository from the catalogs.
	tr.expect("PATCH", "/acr/v1/locked", `{"listEnabled":false}`, 200)
	if r := tr.expect("GET", "/v2/_catalog", "", 200); strings.Contains(r.body, "locked") {
		t.Fatalf("unlisted repository in catalog: %s", r.body)
	}
	tr.expect("PATCH", "/acr/v1/locked", `{"listEnabled":true}`, 200)

	// A write-disabled tag cannot be moved or deleted; others can.
	tr.expect("PATCH", "/acr/v1/locked/_tags/v1", `{"writeEnabled":false}`, 200)
	body := tr.expect("GET", "/v2/locked/manifests/v2", "", 200).body
	if r := tr.do("PUT", "/v2/locked/manifests/v1", "application/vnd.oci.image.manifest.v1+json", []byte(body)); r.code != 403 {
		t.Fatalf("moving a write-disabled tag: %d %s", r.code, r.body)
	}
	if r := tr.do("DELETE", "/acr/v1/locked/_tags/v1", "", nil); r.code != 403 {
		t.Fatalf("deleting a write-disabled tag: %d", r.code)
	}
	// Deleting the manifest a locked tag points at is refused too.
	if r := tr.do("DELETE", "/v2/locked/manifests/"+img.Digest.String(), "", nil); r.code != 403 {
		t.Fatalf("deleting a manifest under a locked tag: %d", r.code)
	}
	// A delete-disabled manifest cannot be deleted.
	tr.expect("PATCH", "/acr/v1/locked/_manifests/"+other.Digest.String(), `{"deleteEnabled":false}`, 200)
	if r := tr.do("DELETE", "/acr/v1/locked/_manifests/"+other.Digest.String(), "", nil); r.code != 403 {
		t.Fatalf("deleting a delete-disabled manifest: %d", r.code)
	}
	// Nor the repository holding it.
	if r := tr.do("DELETE", "/acr/v1/locked", "", nil); r.code != 403 {
		t.Fatalf("deleting a repository with a locked manifest: %d", r.code)
	}
	tr.expect("PATCH", "/acr/v1/locked/_manifests/"+other.Digest.String(), `{"deleteEnabled":true}`, 200)
	tr.expect("PATCH", "/acr/v1/locked/_tags/v1", `{"writeEnabled":true}`, 200)
	r = tr.expect("DELETE", "/acr/v1/locked", "", 202)
	if !strings.Contains(r.body, `"tagsDeleted":["v1","v2"]`) {
		t.Fatalf("repository delete: %s", r.body)
	}
	tr.expect("GET", "/acr/v1/locked/_tags", "", 404)
}

func TestStreamingWorkflow(t *testing.T) {
	tr := newTestRegistry(t, false, nil)
	img := tr.pushImage("stream", "v1", 1)

	// Start a conversion; with no worker running it waits in the queue.
	r := tr.expect("POST", "/acr/v1/stream/_streaming/v1", "", 202)
	op := r.json(t)
	id := op["id"].(string)
	loc := "/acr/v1/stream/_operations/" + id
	if r.header.Get("Operation-Location") != loc || r.header.Get("Location") != loc || r.header.Get("Operation-Id") != id || op["status"] != "NotStarted" {
		t.Fatalf("start: headers %v body %v", r.header, op)
	}
	// Starting again returns the same operation.
	if again := tr.expect("POST", "/acr/v1/stream/_streaming/"+img.Digest.String(), "", 202).json(t); again["id"] != id {
		t.Fatalf("second start made operation %v", again["id"])
	}
	if found := tr.expect("GET", "/acr/v1/stream/_streaming/"+img.Digest.String(), "", 200).json(t); found["id"] != id {
		t.Fatalf("running operation lookup: %v", found)
	}
	// Teleport's check says it is expanding.
	tr.expect("GET", "/mount/v1/stream/_manifests/"+img.Digest.String(), "", 409)

	tr.srv.StartWorkers()
	done := tr.waitOperation(loc)
	if done["status"] != "Succeeded" || done["progress"] != "100%" || done["name"] != "ArtifactStreamingConversion" ||
		done["resource"] != "stream@"+img.Digest.String() || done["startTime"] == "" {
		t.Fatalf("finished operation: %v", done)
	}
	tr.expect("GET", "/mount/v1/stream/_manifests/"+img.Digest.String(), "", 200)
	// Finished: not the running one any more, but still the latest.
	tr.expect("GET", "/acr/v1/stream/_streaming/"+img.Digest.String(), "", 404)
	if latest := tr.expect("GET", "/acr/v1/stream/_streaming/v1?latest=true", "", 200).json(t); latest["id"] != id || latest["status"] != "Succeeded" {
		t.Fatalf("latest conversion: %v", latest)
	}
	refs := tr.expect("GET", "/v2/stream/referrers/"+img.Digest.String()+"?artifactType=application/vnd.azure.artifact.streaming.v1", "", 200)
	if !strings.Contains(refs.body, `"streaming.platform.arch":"amd64"`) {
		t.Fatalf("referrers: %s", refs.body)
	}

	// Auto-streaming, enabled through teleportEnabled, converts new pushes.
	tr.expect("PATCH", "/acr/v1/stream", `{"teleportEnabled":true}`, 200)
	if s := tr.expect("GET", "/acr/v1/stream/_streaming", "", 200).json(t); s["convertPushedImages"] != true {
		t.Fatalf("teleportEnabled did not turn auto-streaming on: %v", s)
	}
	img2 := tr.pushImage("stream", "v2", 2)
	waitFor(t, func() bool {
		return tr.do("GET", "/mount/v1/stream/_manifests/"+img2.Digest.String(), "", nil).code == 200
	})
	tr.expect("POST", "/acr/v1/stream/_streaming", `{"convertPushedImages":false}`, 202)
	if s := tr.expect("GET", "/acr/v1/stream", "", 200).body; !strings.Contains(s, `"teleportEnabled":false`) {
		t.Fatalf("convertPushedImages false did not turn teleport off: %s", s)
	}

	// Cancel of a finished operation changes nothing.
	if c := tr.expect("POST", loc+":cancel", "", 200).json(t); c["status"] != "Succeeded" || c["name"] != "Cancel: ArtifactStreamingConversion" {
		t.Fatalf("cancel after success: %v", c)
	}

	// Deleting the image deletes its streaming artifacts.
	tr.expect("DELETE", "/acr/v1/stream/_manifests/"+img.Digest.String(), "", 202)
	if refs := tr.expect("GET", "/v2/stream/referrers/"+img.Digest.String(), "", 200); strings.Contains(refs.body, "streaming") {
		t.Fatalf("streaming artifact survived its image: %s", refs.body)
	}
}

func TestCancelQueuedOperation(t *testing.T) {
	tr := newTestRegistry(t, false, nil)
	tr.pushImage("q", "v1", 1)
	op := tr.expect("POST", "/acr/v1/q/_streaming/v1", "", 202).json(t)
	c := tr.expect("POST", "/acr/v1/q/_operations/"+op["id"].(string)+":cancel", "", 200).json(t)
	if c["status"] != "Canceled" {
		t.Fatalf("cancel: %v", c)
	}
	tr.srv.StartWorkers()
	if got := tr.expect("GET", "/acr/v1/q/_operations/"+op["id"].(string), "", 200).json(t); got["status"] != "Canceled" {
		t.Fatalf("after workers started: %v", got)
	}
	// A new conversion can be started after a cancel.
	op2 := tr.expect("POST", "/acr/v1/q/_streaming/v1", "", 202).json(t)
	if op2["id"] == op["id"] {
		t.Fatal("canceled operation reused")
	}
	if got := tr.waitOperation("/acr/v1/q/_operations/" + op2["id"].(string)); got["status"] != "Succeeded" {
		t.Fatalf("conversion after cancel: %v", got)
	}
}

func TestSoftDelete(t *testing.T) {
	tr := newTestRegistry(t, true, func(c *config.Config) { c.SoftDelete.Enabled = true })
	tr.expect("POST", "/acr/v1/soft/_streaming", `{"convertPushedImages":true}`, 202)
	img := tr.pushImage("soft", "v1", 1)
	waitFor(t, func() bool { return tr.do("GET", "/mount/v1/soft/_manifests/v1", "", nil).code == 200 })
	refs := tr.expect("GET", "/v2/soft/referrers/"+img.Digest.String(), "", 200).body
	streamingDigest := between(refs, `"digest":"`, `"`)

	tr.expect("DELETE", "/v2/soft/manifests/"+img.Digest.String(), "", 202)
	tr.expect("GET", "/v2/soft/manifests/v1", "", 404)
	if r := tr.expect("GET", "/acr/v1/_deleted/soft/_manifests", "", 200); !strings.Contains(r.body, img.Digest.String()) || strings.Contains(r.body, streamingDigest) {
		t.Fatalf("deleted manifests: %s (streaming artifact %s must be gone for good)", r.body, streamingDigest)
	}
	if r := tr.expect("GET", "/acr/v1/_deleted/soft/_tags", "", 200); !strings.Contains(r.body, `"name":"v1"`) {
		t.Fatalf("deleted tags: %s", r.body)
	}
	// Pushing the deleted digest again is refused: restore it instead.
	body := tr.expect("GET", "/acr/v1/soft/_manifests", "", 200)
	_ = body
	r := tr.do("POST", "/acr/v1/_deleted/soft/_manifests/"+streamingDigest, "application/json", []byte(`{}`))
	if r.code != 404 {
		t.Fatalf("restoring a streaming artifact: %d %s", r.code, r.body)
	}
	tr.expect("POST", "/acr/v1/_deleted/soft/_manifests/"+img.Digest.String(), `{"tag":"restored"}`, 200)
	tr.expect("GET", "/v2/soft/manifests/restored", "", 200)
	// The restored image is converted again.
	waitFor(t, func() bool { return tr.do("GET", "/mount/v1/soft/_manifests/restored", "", nil).code == 200 })

	// A deleted repository is listed, and its manifests restorable.
	tr.expect("DELETE", "/acr/v1/soft", "", 202)
	if r := tr.expect("GET", "/acr/v1/_deleted/_catalog", "", 200); !strings.Contains(r.body, `"repository":"soft"`) {
		t.Fatalf("deleted catalog: %s", r.body)
	}
	tr.expect("POST", "/acr/v1/_deleted/soft/_manifests/"+img.Digest.String()+"?force=true", `{"tag":"back"}`, 200)
	tr.expect("GET", "/v2/soft/manifests/back", "", 200)
}

func TestImport(t *testing.T) {
	source := newTestRegistry(t, false, nil)
	img := source.pushImage("library/base", "1.0", 7)
	tr := newTestRegistry(t, true, nil)
	tr.expect("POST", "/acr/v1/imported/_streaming", `{"convertPushedImages":true}`, 202)
	req := fmt.Sprintf(`{"source":{"registryUri":%q,"sourceImage":"library/base:1.0"},"targetTags":["imported:1.0","copy:latest"],"mode":"NoForce"}`, "http://"+strings.TrimPrefix(source.ts.URL, "http://"))
	r := tr.expect("POST", "/acr/v1/_import", req, 202)
	done := tr.waitOperation(r.header.Get("Operation-Location"))
	if done["status"] != "Succeeded" {
		t.Fatalf("import: %v", done)
	}
	for _, ref := range []string{"/v2/imported/manifests/1.0", "/v2/copy/manifests/latest"} {
		if got := tr.expect("GET", ref, "", 200).header.Get("Docker-Content-Digest"); got != img.Digest.String() {
			t.Fatalf("%s: digest %s, want %s (digests preserved)", ref, got, img.Digest)
		}
	}
	// Imported into a streaming repository, the image is converted.
	waitFor(t, func() bool { return tr.do("GET", "/mount/v1/imported/_manifests/1.0", "", nil).code == 200 })
	// NoForce refuses before copying; Force overwrites.
	if r := tr.do("POST", "/acr/v1/_import", "application/json", []byte(req)); r.code != 409 {
		t.Fatalf("second NoForce import: %d", r.code)
	}
	r = tr.expect("POST", "/acr/v1/_import", strings.Replace(req, "NoForce", "Force", 1), 202)
	if got := tr.waitOperation(r.header.Get("Operation-Location")); got["status"] != "Succeeded" {
		t.Fatalf("forced import: %v", got)
	}
	// A source that does not exist fails the operation with a clear code.
	bad := strings.Replace(strings.Replace(req, "library/base:1.0", "library/none:1.0", 1), "NoForce", "Force", 1)
	r = tr.expect("POST", "/acr/v1/_import", bad, 202)
	failed := r.header.Get("Operation-Location")
	if got := tr.waitOperation(failed); got["status"] != "Failed" || got["error"].(map[string]any)["code"] != "IMPORT_SOURCE_FAILED" {
		t.Fatalf("import of a missing image: %v", got)
	}
	// Once the source has it, the failed import is retried as it was asked,
	// through its first target.
	source.pushImage("library/none", "1.0", 8)
	r = tr.expect("POST", strings.Replace(failed, "/acr/v1/", "/acr/v1/imported/", 1)+":retry", "", 202)
	if got := tr.waitOperation(r.header.Get("Operation-Location")); got["status"] != "Succeeded" || got["resource"] != between(bad, `"registryUri":"`, `"`)+"/library/none:1.0" {
		t.Fatalf("retried import: %v", got)
	}
	if got := operationIDs(t, tr.expect("GET", "/acr/v1/_operations?kind=Import&status=Succeeded", "", 200)); len(got) != 3 {
		t.Fatalf("succeeded imports: %v", got)
	}
	if r := tr.expect("GET", "/acr/v1/imported/_operations?kind=ArtifactStreamingConversion", "", 200); !strings.Contains(r.body, `"startedBy":"auto-streaming"`) {
		t.Fatalf("conversion of an imported image: %s", r.body)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 3000; i++ {
		if cond() {
			return
		}
		sleep()
	}
	t.Fatal("condition not met within 60s")
}

func between(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return ""
	}
	s = s[i+len(start):]
	j := strings.Index(s, end)
	if j < 0 {
		return ""
	}
	return s[:j]
}

var _ = http.StatusOK
