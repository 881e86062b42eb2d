package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// artifactTypeStreaming is the artifactType of the streaming artifacts
// sluiced makes, the managed registry's name for them.
const artifactTypeStreaming = "application/vnd.azure.artifact.streaming.v1"

// artifactTypeStreamingSignature is the artifactType of the registry's signatures
// of its streaming artifacts, referrers of the same image.
const artifactTypeStreamingSignature = "application/vnd.sluice.streaming.signature.v1"

// Operation statuses of the management API.
const (
	statusNotStarted = "NotStarted"
	statusRunning    = "Running"
	statusSucceeded  = "Succeeded"
	statusFailed     = "Failed"
	statusCanceled   = "Canceled"
)

// operation is a conversion or import as the management API shows it.
type operation struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Resource      string `json:"resource"`
	Status        string `json:"status"`
	Progress      string `json:"progress"`
	Details       string `json:"details"`
	ProgressBytes int64  `json:"progressBytes"`
	TotalBytes    int64  `json:"totalBytes"`
	Error         *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Result json.RawMessage `json:"result"`
}

// percent is the progress as a number, -1 when it is not "<n>%".
func (op operation) percent() int {
	n, err := strconv.Atoi(strings.TrimSuffix(op.Progress, "%"))
	if err != nil || !strings.HasSuffix(op.Progress, "%") {
		return -1
	}
	return n
}

func (op operation) finished() bool {
	return op.Status != statusNotStarted && op.Status != statusRunning
}

func (op operation) String() string {
	s := fmt.Sprintf("%s %s %s %s", op.ID, op.Status, op.Progress, op.Details)
	if op.Error != nil {
		s += fmt.Sprintf(" (error %s: %s)", op.Error.Code, op.Error.Message)
	}
	return s
}

// repositoryInfo is what GET /acr/v1/{repo} says of a repository.
type repositoryInfo struct {
	ImageName            string `json:"imageName"`
	ManifestCount        int    `json:"manifestCount"`
	TagCount             int    `json:"tagCount"`
	Size                 int64  `json:"size"`
	ChangeableAttributes struct {
		TeleportEnabled bool `json:"teleportEnabled"`
	} `json:"changeableAttributes"`
}

// mgmt sends a JSON request to the management API and decodes the answer
// into out (when not nil) if its status is want.
func (c *ociClient) mgmt(ctx context.Context, method, path string, body any, want int, out any) (http.Header, error) {
	var payload []byte
	hdr := http.Header{}
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, err
		}
		hdr.Set("Content-Type", "application/json")
	}
	h, b, err := c.do(ctx, method, path, hdr, payload, want)
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return nil, fmt.Errorf("%s %s: answer is not the JSON expected: %v\n%s", method, path, err, b)
		}
	}
	return h, nil
}

// enableStreaming turns on the conversion of images pushed to repo, which
// need not exist yet.
func (c *ociClient) enableStreaming(t *testing.T, repo string) {
	t.Helper()
	var got struct {
		ConvertPushedImages bool `json:"convertPushedImages"`
	}
	_, err := c.mgmt(context.Background(), http.MethodPost, "/acr/v1/"+repo+"/_streaming", map[string]bool{"convertPushedImages": true}, http.StatusAccepted, &got)
	if err != nil {
		t.Fatal(err)
	}
	if !got.ConvertPushedImages {
		t.Fatalf("enabling auto-streaming on %s answered convertPushedImages false", repo)
	}
}

// startOperation sends a request that starts an operation (202) and checks
// that its headers agree on where to follow it. It returns that location.
func (c *ociClient) startOperation(t *testing.T, path string, body any) (string, operation) {
	t.Helper()
	var op operation
	h, err := c.mgmt(context.Background(), http.MethodPost, path, body, http.StatusAccepted, &op)
	if err != nil {
		t.Fatal(err)
	}
	loc := h.Get("Operation-Location")
	if loc == "" || h.Get("Location") != loc || h.Get("Operation-Id") != op.ID || !strings.HasSuffix(loc, "/_operations/"+op.ID) {
		t.Fatalf("POST %s: Location %q, Operation-Location %q, Operation-Id %q for operation %q: want all three to name it",
			path, h.Get("Location"), loc, h.Get("Operation-Id"), op.ID)
	}
	return loc, op
}

// startConversion asks for the streaming artifact of repo@ref (a tag or a
// digest) and returns the operation's location.
func (c *ociClient) startConversion(t *testing.T, repo, ref string) (string, operation) {
	t.Helper()
	return c.startOperation(t, "/acr/v1/"+repo+"/_streaming/"+ref, nil)
}

func (c *ociClient) getOperation(ctx context.Context, loc string) (operation, error) {
	var op operation
	_, err := c.mgmt(ctx, http.MethodGet, loc, nil, http.StatusOK, &op)
	return op, err
}

// waitOperation polls an operation until cond holds and returns it. An
// operation that ends without cond holding fails the test at once.
func (c *ociClient) waitOperation(t *testing.T, loc string, timeout time.Duration, what string, cond func(operation) bool) operation {
	t.Helper()
	var op operation
	var err error
	held := poll(timeout, func() bool {
		if op, err = c.getOperation(context.Background(), loc); err != nil {
			return false
		}
		if cond(op) {
			return true
		}
		if op.finished() {
			t.Fatalf("operation %s ended before it %s: %v", loc, what, op)
		}
		return false
	})
	if !held {
		t.Fatalf("timed out after %v waiting until operation %s %s; last seen: %v (error %v)", timeout, loc, what, op, err)
	}
	return op
}

// waitSucceeded waits for an operation to succeed.
func (c *ociClient) waitSucceeded(t *testing.T, loc string, timeout time.Duration) operation {
	t.Helper()
	op := c.waitOperation(t, loc, timeout, "succeeded", func(op operation) bool { return op.Status == statusSucceeded })
	if op.Progress != "100%" {
		t.Errorf("operation %s succeeded with progress %q, want 100%%", loc, op.Progress)
	}
	return op
}

// referrers lists the referrers of repo@dgst, those of artifactType only
// unless it is empty.
func (c *ociClient) referrers(t *testing.T, repo string, dgst digest.Digest, artifactType string) []ocispec.Descriptor {
	t.Helper()
	path := "/v2/" + repo + "/referrers/" + dgst.String()
	if artifactType != "" {
		path += "?artifactType=" + artifactType
	}
	var idx ocispec.Index
	if _, err := c.mgmt(context.Background(), http.MethodGet, path, nil, http.StatusOK, &idx); err != nil {
		t.Fatal(err)
	}
	return idx.Manifests
}

// waitStreamingReferrers polls the referrers API until repo@dgst has n
// streaming artifacts and returns them.
func (c *ociClient) waitStreamingReferrers(t *testing.T, repo string, dgst digest.Digest, n int, timeout time.Duration) []ocispec.Descriptor {
	t.Helper()
	var refs []ocispec.Descriptor
	waitFor(t, timeout, fmt.Sprintf("%s@%s has %d streaming artifacts", repo, dgst, n), func() bool {
		refs = c.referrers(t, repo, dgst, artifactTypeStreaming)
		return len(refs) >= n
	})
	if len(refs) != n {
		t.Fatalf("%s@%s has %d streaming artifacts, want %d: %+v", repo, dgst, len(refs), n, refs)
	}
	return refs
}

func (c *ociClient) repository(t *testing.T, repo string) repositoryInfo {
	t.Helper()
	var info repositoryInfo
	if _, err := c.mgmt(context.Background(), http.MethodGet, "/acr/v1/"+repo, nil, http.StatusOK, &info); err != nil {
		t.Fatal(err)
	}
	return info
}

// getImageManifest fetches an image manifest by tag or digest and decodes it.
func (c *ociClient) getImageManifest(t *testing.T, repo, ref string) (ocispec.Manifest, []byte) {
	t.Helper()
	_, body, err := c.getManifest(context.Background(), repo, ref, ocispec.MediaTypeImageManifest)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("manifest %s@%s: %v", repo, ref, err)
	}
	return m, body
}

// credential is a user name and password, user:password as a string.
type credential struct{ user, password string }

func (c credential) String() string { return c.user + ":" + c.password }

// createToken creates a token on a scope map and returns its user name and
// first password, which the registry shows only now.
func createToken(t *testing.T, admin *ociClient, name, scopeMap string) credential {
	t.Helper()
	var tok struct {
		Credentials struct {
			Username  string `json:"username"`
			Passwords []struct {
				Value string `json:"value"`
			} `json:"passwords"`
		} `json:"credentials"`
	}
	body := map[string]string{"name": name, "scopeMapId": scopeMap}
	if _, err := admin.mgmt(context.Background(), http.MethodPost, "/acr/v1/_tokens", body, http.StatusCreated, &tok); err != nil {
		t.Fatal(err)
	}
	if tok.Credentials.Username != name || len(tok.Credentials.Passwords) == 0 || tok.Credentials.Passwords[0].Value == "" {
		t.Fatalf("token %s was created without a password: %+v", name, tok)
	}
	return credential{name, tok.Credentials.Passwords[0].Value}
}
