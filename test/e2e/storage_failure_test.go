package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestStorageFailureIsTheRegistrys breaks sluiced's blob directory (files
// where it keeps blobs and upload parts: every write fails, for root too)
// and pushes: each push answers 500 UNKNOWN with a message that names no
// server path, and the log has an ERROR line with the cause and its path,
// the route and the repository.
func TestStorageFailureIsTheRegistrys(t *testing.T) {
	data := t.TempDir()
	for _, p := range []string{"uploads", "blobs"} {
		writeFile(t, filepath.Join(data, "blobs", p), nil)
	}
	reg := startSluiced(t, data)
	oc := newOCIClient(t, reg.addr)
	ctx := context.Background()
	content := []byte("a layer the registry cannot keep")
	d := digest.FromBytes(content)

	check := func(step string, body []byte) {
		t.Helper()
		var answer struct {
			Errors []struct{ Code, Message string }
		}
		if err := json.Unmarshal(body, &answer); err != nil || len(answer.Errors) != 1 || answer.Errors[0].Code != "UNKNOWN" {
			t.Errorf("%s: answer %s, want one UNKNOWN error (%v)", step, body, err)
		}
		if strings.Contains(string(body), data) || strings.Contains(string(body), "/blobs") {
			t.Errorf("%s: the answer names a server path: %s", step, body)
		}
	}
	// A monolithic push.
	_, body, err := oc.do(ctx, http.MethodPost, "/v2/app/blobs/uploads/?digest="+d.String(), nil, content, http.StatusInternalServerError)
	if err != nil {
		t.Fatalf("monolithic push: %v", err)
	}
	check("monolithic push", body)
	// A chunk of a session, then the closing PUT with the bytes.
	loc, err := oc.startUpload(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	_, body, err = oc.do(ctx, http.MethodPatch, loc, http.Header{"Content-Type": {"application/octet-stream"}}, content, http.StatusInternalServerError)
	if err != nil {
		t.Fatalf("chunk: %v", err)
	}
	check("chunk", body)
	_, body, err = oc.do(ctx, http.MethodPut, loc+"?digest="+d.String(), nil, content, http.StatusInternalServerError)
	if err != nil {
		t.Fatalf("closing PUT: %v", err)
	}
	check("closing PUT", body)

	routes := map[string]bool{}
	for _, line := range strings.Split(reg.logText(), "\n") {
		var e struct {
			Level, Msg, Route, Repository, Err string
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.Level != "ERROR" || e.Msg != "request failed" {
			continue
		}
		if e.Repository == "app" && strings.Contains(e.Err, filepath.Join(data, "blobs")) {
			routes[e.Route] = true
		}
	}
	if !routes["v2_uploads"] || !routes["v2_upload"] {
		t.Errorf("no ERROR line with the path for each failed route (have %v):\n%s", routes, reg.logText())
	}
}
