package mgmt_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/config"
)

// operationIDs are the ids of a listing's operations, in order.
func operationIDs(t *testing.T, r response) []string {
	t.Helper()
	list, ok := r.json(t)["operations"].([]any)
	if !ok {
		t.Fatalf("no operations in %s", r.body)
	}
	ids := make([]string, len(list))
	for i, op := range list {
		ids[i] = op.(map[string]any)["id"].(string)
	}
	return ids
}

func TestOperationListing(t *testing.T) {
	tr := newTestRegistry(t, false, nil)
	tr.pushImage("team/app", "v1", 1)
	tr.pushImage("team/app", "v2", 2)
	tr.pushImage("other", "x", 3)
	// Oldest first: v1, x (canceled), v2; then auto-streaming's.
	first := tr.expect("POST", "/acr/v1/team/app/_streaming/v1", "", 202).json(t)["id"].(string)
	sleep()
	canceled := tr.expect("POST", "/acr/v1/other/_streaming/x", "", 202).json(t)["id"].(string)
	tr.expect("POST", "/acr/v1/other/_operations/"+canceled+":cancel", "", 200)
	sleep()
	second := tr.expect("POST", "/acr/v1/team/app/_streaming/v2", "", 202).json(t)["id"].(string)
	sleep()
	tr.expect("PATCH", "/acr/v1/auto/_streaming", `{"convertPushedImages":true}`, 202)
	tr.pushImage("auto", "v1", 4)
	auto := operationIDs(t, tr.expect("GET", "/acr/v1/_operations?repository=auto", "", 200))
	if len(auto) != 1 {
		t.Fatalf("auto-streaming enqueued %v", auto)
	}

	tests := []struct {
		name, path string
		wantCode   int
		wantError  string
		wantIDs    []string
		wantBody   []string
		wantLink   string
	}{
		{name: "all, newest first", path: "/acr/v1/_operations", wantCode: 200, wantIDs: []string{auto[0], second, canceled, first},
			wantBody: []string{`"startedBy":"auto-streaming"`, `"startedBy":"unrestricted"`, `"name":"ArtifactStreamingConversion"`, `"resource":"team/app@sha256:`}},
		{name: "first page", path: "/acr/v1/_operations?n=2", wantCode: 200, wantIDs: []string{auto[0], second},
			wantLink: "</acr/v1/_operations?last=" + second + "&n=2>; rel=\"next\""},
		{name: "last page", path: "/acr/v1/_operations?n=2&last=" + second, wantCode: 200, wantIDs: []string{canceled, first}},
		{name: "of a repository", path: "/acr/v1/_operations?repository=team/app", wantCode: 200, wantIDs: []string{second, first}},
		{name: "a page of a repository keeps the filter", path: "/acr/v1/_operations?repository=team/app&n=1", wantCode: 200, wantIDs: []string{second},
			wantLink: "</acr/v1/_operations?last=" + second + "&n=1&repository=team%2Fapp>; rel=\"next\""},
		{name: "by the repository's path", path: "/acr/v1/team/app/_operations?n=1", wantCode: 200, wantIDs: []string{second},
			wantLink: "</acr/v1/team/app/_operations?last=" + second + "&n=1>; rel=\"next\""},
		{name: "by status", path: "/acr/v1/_operations?status=Canceled", wantCode: 200, wantIDs: []string{canceled}, wantBody: []string{`"status":"Canceled"`}},
		{name: "by status and repository", path: "/acr/v1/_operations?status=NotStarted&repository=other", wantCode: 200, wantIDs: []string{}},
		{name: "by kind", path: "/acr/v1/_operations?kind=Import", wantCode: 200, wantIDs: []string{}},
		{name: "unknown status", path: "/acr/v1/_operations?status=Done", wantCode: 400, wantError: "INVALID_REQUEST"},
		{name: "unknown kind", path: "/acr/v1/_operations?kind=Copy", wantCode: 400, wantError: "INVALID_REQUEST"},
		{name: "invalid repository", path: "/acr/v1/_operations?repository=No/Way", wantCode: 400, wantError: "NAME_INVALID"},
		{name: "two repositories", path: "/acr/v1/team/app/_operations?repository=other", wantCode: 400, wantError: "INVALID_REQUEST"},
		{name: "unknown last", path: "/acr/v1/_operations?last=nope", wantCode: 400, wantError: "INVALID_REQUEST"},
		{name: "bad n", path: "/acr/v1/_operations?n=-1", wantCode: 400, wantError: "INVALID_REQUEST"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tr.do("GET", tc.path, "", nil)
			if r.code != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", r.code, tc.wantCode, r.body)
			}
			if tc.wantError != "" {
				if got := errorCode(t, r); got != tc.wantError {
					t.Errorf("error %s, want %s", got, tc.wantError)
				}
				return
			}
			if got := operationIDs(t, r); strings.Join(got, " ") != strings.Join(tc.wantIDs, " ") {
				t.Errorf("operations %v, want %v", got, tc.wantIDs)
			}
			for _, want := range tc.wantBody {
				if !strings.Contains(r.body, want) {
					t.Errorf("body lacks %s:\n%s", want, r.body)
				}
			}
			if got := r.header.Get("Link"); got != tc.wantLink {
				t.Errorf("Link %q, want %q", got, tc.wantLink)
			}
		})
	}
}

func TestOperationRetry(t *testing.T) {
	tr := newTestRegistry(t, false, nil)
	tr.pushImage("app", "v1", 1)
	op := tr.expect("POST", "/acr/v1/app/_streaming/v1", "", 202).json(t)
	id := op["id"].(string)
	r := tr.do("POST", "/acr/v1/app/_operations/"+id+":retry", "", nil)
	if r.code != http.StatusConflict || errorCode(t, r) != "OPERATION_NOT_RETRYABLE" || !strings.Contains(r.body, "cancel it first") {
		t.Fatalf("retry of a queued operation: %d %s", r.code, r.body)
	}
	tr.expect("POST", "/acr/v1/app/_operations/"+id+":cancel", "", 200)

	r = tr.expect("POST", "/acr/v1/app/_operations/"+id+":retry", "", http.StatusAccepted)
	retried := r.json(t)
	newID := retried["id"].(string)
	if newID == id || retried["status"] != "NotStarted" || retried["resource"] != op["resource"] || retried["startedBy"] != "unrestricted" {
		t.Fatalf("retried: %v (first %v)", retried, op)
	}
	if loc := r.header.Get("Operation-Location"); loc != "/acr/v1/app/_operations/"+newID || r.header.Get("Operation-Id") != newID {
		t.Fatalf("Operation-Location %q, Operation-Id %q", loc, r.header.Get("Operation-Id"))
	}
	if got := tr.expect("GET", "/acr/v1/app/_operations/"+id, "", 200).json(t); got["status"] != "Canceled" {
		t.Fatalf("the canceled operation after its retry: %v", got)
	}
	// Retrying it again while the retry is queued answers the queued one.
	if again := tr.expect("POST", "/acr/v1/app/_operations/"+id+":retry", "", http.StatusAccepted).json(t); again["id"] != newID {
		t.Fatalf("a second retry: %v, want %s", again, newID)
	}

	tr.srv.StartWorkers()
	if done := tr.waitOperation("/acr/v1/app/_operations/" + newID); done["status"] != "Succeeded" {
		t.Fatalf("the retried conversion: %v", done)
	}
	r = tr.do("POST", "/acr/v1/app/_operations/"+newID+":retry", "", nil)
	if r.code != http.StatusConflict || errorCode(t, r) != "OPERATION_NOT_RETRYABLE" {
		t.Fatalf("retry of a succeeded operation: %d %s", r.code, r.body)
	}
	for path, want := range map[string]string{
		"/acr/v1/app/_operations/nope:retry":         "OPERATION_UNKNOWN",
		"/acr/v1/other/_operations/" + id + ":retry": "OPERATION_UNKNOWN",
	} {
		if r := tr.do("POST", path, "", nil); r.code != http.StatusNotFound || errorCode(t, r) != want {
			t.Errorf("POST %s: %d %s", path, r.code, r.body)
		}
	}
	if r := tr.do("POST", "/acr/v1/app/_operations/"+id+":retry", "application/json", []byte(`{"credential":{}}`)); r.code != http.StatusBadRequest {
		t.Errorf("retry with a misspelt body: %d %s", r.code, r.body)
	}
}

func TestOperationsAuthorization(t *testing.T) {
	tr := newTestRegistry(t, false, func(c *config.Config) {
		c.Auth.Enabled = true
		c.AdminPassword = "admin-secret-1"
	})
	admin := tr.as("admin", "admin-secret-1")
	admin.pushImage("team-a/app", "v1", 1)
	admin.pushImage("team-b/app", "v1", 2)
	opA := admin.expect("POST", "/acr/v1/team-a/app/_streaming/v1", "", 202).json(t)
	if opA["startedBy"] != "admin" {
		t.Fatalf("started by the admin user: %v", opA)
	}
	a := opA["id"].(string)
	sleep()
	b := admin.expect("POST", "/acr/v1/team-b/app/_streaming/v1", "", 202).json(t)["id"].(string)
	admin.expect("POST", "/acr/v1/team-a/app/_operations/"+a+":cancel", "", 200)
	admin.expect("POST", "/acr/v1/_scopemaps", `{"name":"team-a-read","actions":["repositories/team-a/*/metadata/read"]}`, http.StatusCreated)
	reader := tr.as("team-a-reader", tokenPassword(t, admin.expect("POST", "/acr/v1/_tokens", `{"name":"team-a-reader","scopeMapId":"team-a-read"}`, http.StatusCreated)))
	puller := tr.as("node-pull", tokenPassword(t, admin.expect("POST", "/acr/v1/_tokens", `{"name":"node-pull","scopeMapId":"_repositories_pull"}`, http.StatusCreated)))
	pusher := tr.as("ci-pusher", tokenPassword(t, admin.expect("POST", "/acr/v1/_tokens", `{"name":"ci-pusher","scopeMapId":"_repositories_push"}`, http.StatusCreated)))
	writer := tr.as("ci-writer", tokenPassword(t, admin.expect("POST", "/acr/v1/_tokens",
		`{"name":"ci-writer","scopeMapId":"_repositories_push_metadata_write"}`, http.StatusCreated)))

	tests := []struct {
		name    string
		as      *testRegistry
		method  string
		path    string
		want    int
		wantIDs []string
	}{
		{"admin lists every operation", admin, "GET", "/acr/v1/_operations", 200, []string{b, a}},
		{"a reader lists those it may read", reader, "GET", "/acr/v1/_operations", 200, []string{a}},
		{"a reader lists its repository", reader, "GET", "/acr/v1/_operations?repository=team-a/app", 200, []string{a}},
		{"a reader lists its repository by path", reader, "GET", "/acr/v1/team-a/app/_operations", 200, []string{a}},
		{"a reader may not list another repository", reader, "GET", "/acr/v1/_operations?repository=" + url.QueryEscape("team-b/app"), 403, nil},
		{"a reader may not list another repository by path", reader, "GET", "/acr/v1/team-b/app/_operations", 403, nil},
		{"pull alone reads no operation", puller, "GET", "/acr/v1/_operations", 200, []string{}},
		{"anonymous callers list nothing", tr, "GET", "/acr/v1/_operations", 401, nil},
		{"a reader may not retry", reader, "POST", "/acr/v1/team-a/app/_operations/" + a + ":retry", 403, nil},
		{"pull may not retry", puller, "POST", "/acr/v1/team-a/app/_operations/" + a + ":retry", 403, nil},
		{"push alone may not retry a conversion", pusher, "POST", "/acr/v1/team-a/app/_operations/" + a + ":retry", 403, nil},
		{"nor through the registry-level route", pusher, "POST", "/acr/v1/_operations/" + a + ":retry", 403, nil},
		{"a reader finds no operation to retry at registry level", reader, "POST", "/acr/v1/_operations/" + a + ":retry", 404, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.as.do(tc.method, tc.path, "", nil)
			if r.code != tc.want {
				t.Fatalf("status %d, want %d: %s", r.code, tc.want, r.body)
			}
			if tc.wantIDs != nil {
				if got := operationIDs(t, r); strings.Join(got, " ") != strings.Join(tc.wantIDs, " ") {
					t.Errorf("operations %v, want %v", got, tc.wantIDs)
				}
			}
		})
	}

	retried := writer.expect("POST", "/acr/v1/team-a/app/_operations/"+a+":retry", "", http.StatusAccepted).json(t)
	if retried["startedBy"] != "ci-writer" {
		t.Fatalf("retried by a token: %v", retried)
	}
	// The registry-level route answers the same for one who may.
	again := writer.expect("POST", "/acr/v1/_operations/"+a+":retry", "", http.StatusAccepted).json(t)
	if again["id"] != retried["id"] {
		t.Fatalf("a registry-level retry while the retry is queued: %v, want %v", again, retried["id"])
	}
}
