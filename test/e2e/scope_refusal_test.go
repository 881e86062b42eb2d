//go:build linux

package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestSkopeoPushOutsideTokenScope pushes with skopeo as a token that may
// only read team-a/app, and expects skopeo's error to say what the token
// may not do and the scope map action it needs: pushing to team-a/app
// (refused at the upload, whose answer has the OCI error body) and pushing
// to team-b/app (refused at the first HEAD of a blob, whose answer has no
// body; the challenge's error_description carries the words there).
func TestSkopeoPushOutsideTokenScope(t *testing.T) {
	skopeo := requireTool(t, "skopeo")
	ar := startAuthRegistry(t)
	if _, err := ar.admin.mgmt(context.Background(), "POST", "/acr/v1/_scopemaps", map[string]any{
		"name":    "team-a-app-read",
		"actions": []string{"repositories/team-a/app/content/read"},
	}, 201, nil); err != nil {
		t.Fatal(err)
	}
	reader := createToken(t, ar.admin, "app-reader", "team-a-app-read")
	cl := newClients(t)
	src := filepath.Join(cl.dir, "src")
	newTestImage(t, newRand(t), 2<<10).writeLayout(t, src, "v1")

	for _, c := range []struct {
		repo, want string
		bodiless   bool
	}{
		{repo: "team-a/app", want: "token app-reader may not push to team-a/app (it needs content/write)"},
		{repo: "team-b/app", want: "token app-reader may not pull from team-b/app (it needs content/read)", bodiless: true},
	} {
		stdout, stderr, err := cl.try(skopeo, "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", reader.String(),
			"oci:"+src+":v1", "docker://"+ar.reg.addr+"/"+c.repo+":v1")
		out := stdout + stderr
		if err == nil {
			t.Fatalf("skopeo pushed to %s with a token that may only read team-a/app:\n%s", c.repo, out)
		}
		if !strings.Contains(out, c.want) {
			t.Errorf("skopeo's refusal to push to %s does not say %q:\n%s", c.repo, c.want, out)
		}
		// skopeo parses the empty body of a HEAD answer all the same;
		// every other refusal has one.
		if !c.bodiless && strings.Contains(out, "unexpected end of JSON input") {
			t.Errorf("the refusal to push to %s came without a body:\n%s", c.repo, out)
		}
	}
}
