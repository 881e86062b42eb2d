//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"

	"github.com/opencontainers/go-digest"
)

// authAdminPassword is the admin's password in the tests that turn
// authentication on.
const authAdminPassword = "e2e-Admin-Secret-7"

// authRegistry is a sluiced with authentication on and two tokens: one that
// may push and pull team-a/* only, and one that may pull everything.
type authRegistry struct {
	reg            *sluiced
	admin          *ociClient
	pusher, puller credential
}

func startAuthRegistry(t *testing.T) *authRegistry {
	t.Helper()
	reg := startSluiced(t, t.TempDir(), "SLUICE_AUTH_ENABLED=true", "SLUICE_ADMIN_PASSWORD="+authAdminPassword)
	ar := &authRegistry{reg: reg, admin: newOCIClient(t, reg.addr).as("admin", authAdminPassword)}
	ctx := context.Background()
	if _, err := ar.admin.mgmt(ctx, "POST", "/acr/v1/_scopemaps", map[string]any{
		"name":    "team-a-push",
		"actions": []string{"repositories/team-a/*/content/read", "repositories/team-a/*/content/write"},
	}, 201, nil); err != nil {
		t.Fatal(err)
	}
	ar.pusher = createToken(t, ar.admin, "team-a-ci", "team-a-push")
	ar.puller = createToken(t, ar.admin, "reader", "_repositories_pull")
	return ar
}

// wantRefused runs a client that must fail and checks that what it printed
// says why, with one of the hints given (clients word it differently).
func wantRefused(t *testing.T, cl *clients, hints []string, tool string, args ...string) {
	t.Helper()
	stdout, stderr, err := cl.try(tool, args...)
	if err == nil {
		t.Fatalf("%s %s succeeded, want it refused:\n%s", filepath.Base(tool), strings.Join(args, " "), stdout)
	}
	out := strings.ToLower(stdout + stderr)
	for _, h := range hints {
		if strings.Contains(out, h) {
			return
		}
	}
	t.Errorf("%s %s failed without saying why (want one of %q):\n%s%s", filepath.Base(tool), strings.Join(args, " "), hints, stdout, stderr)
}

// Client wordings of a 401 and of a 403 / insufficient_scope answer.
var (
	unauthorizedHints = []string{"401", "unauthorized", "authentication required", "invalid username/password", "authorization failed"}
	deniedHints       = []string{"403", "denied", "insufficient_scope", "unauthorized", "401"}
)

// TestSkopeoWithCredentials pushes and pulls with skopeo through the
// registry's token flow: credentials on the command line, then a `skopeo
// login` stored in its auth file. A token limited to team-a/* is refused
// elsewhere, a pull-only token cannot push, a wrong password gets nothing.
func TestSkopeoWithCredentials(t *testing.T) {
	skopeo := requireTool(t, "skopeo")
	ar := startAuthRegistry(t)
	cl := newClients(t)
	img := newTestImage(t, newRand(t), 2<<10, 300<<10)
	src := filepath.Join(cl.dir, "src")
	img.writeLayout(t, src, "v1")
	ref := "docker://" + ar.reg.addr + "/team-a/app:v1"
	copyTo := func(dest string, creds ...string) []string {
		args := []string{"--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false"}
		if len(creds) > 0 {
			args = append(args, "--dest-creds", creds[0])
		}
		return append(args, "oci:"+src+":v1", dest)
	}

	wantRefused(t, cl, unauthorizedHints, skopeo, copyTo(ref)...)
	wantRefused(t, cl, unauthorizedHints, skopeo, copyTo(ref, ar.pusher.user+":wrong-password")...)
	wantRefused(t, cl, deniedHints, skopeo, copyTo(ref, ar.puller.String())...)
	wantRefused(t, cl, deniedHints, skopeo, copyTo("docker://"+ar.reg.addr+"/team-b/app:v1", ar.pusher.String())...)
	cl.run(skopeo, copyTo(ref, ar.pusher.String())...)

	back := filepath.Join(cl.dir, "back")
	cl.run(skopeo, "--insecure-policy", "copy", "--preserve-digests", "--src-tls-verify=false", "--src-creds", ar.puller.String(), ref, "oci:"+back+":v1")
	if desc, _ := readLayoutManifest(t, back, "v1"); desc.Digest != img.ManifestDigest {
		t.Fatalf("pulled back %s, pushed %s", desc.Digest, img.ManifestDigest)
	}
	checkLayoutBlobs(t, back, img.Blobs)

	// skopeo login checks the credentials against the registry before it
	// stores them.
	wantRefused(t, cl, unauthorizedHints, skopeo, "login", "--tls-verify=false", "-u", ar.puller.user, "-p", "wrong-password", ar.reg.addr)
	cl.run(skopeo, "login", "--tls-verify=false", "-u", ar.puller.user, "-p", ar.puller.password, ar.reg.addr)
	out := cl.run(skopeo, "inspect", "--raw", "--tls-verify=false", ref)
	if digest.FromString(out) != img.ManifestDigest {
		t.Errorf("skopeo inspect --raw after login printed a manifest of digest %s, want %s", digest.FromString(out), img.ManifestDigest)
	}
	cl.run(skopeo, "logout", ar.reg.addr)
	wantRefused(t, cl, unauthorizedHints, skopeo, "inspect", "--raw", "--tls-verify=false", ref)
}

// TestOrasLogin logs oras in with a token, pushes and pulls an artifact,
// and finds a push outside the token's repositories refused.
func TestOrasLogin(t *testing.T) {
	oras := requireTool(t, "oras")
	ar := startAuthRegistry(t)
	cl := newClients(t)
	writeFile(t, filepath.Join(cl.dir, "notes.txt"), []byte("pushed by a token of team-a\n"))
	ref := ar.reg.addr + "/team-a/notes:v1"

	wantRefused(t, cl, unauthorizedHints, oras, "push", "--plain-http", ref, "notes.txt")
	wantRefused(t, cl, unauthorizedHints, oras, "login", "--plain-http", "-u", ar.pusher.user, "-p", "wrong-password", ar.reg.addr)
	cl.run(oras, "login", "--plain-http", "-u", ar.pusher.user, "-p", ar.pusher.password, ar.reg.addr)

	pushed := decodeOras(t, cl.run(oras, "push", "--plain-http", "--format", "json", ref, "notes.txt"))
	wantRefused(t, cl, deniedHints, oras, "push", "--plain-http", ar.reg.addr+"/team-b/notes:v1", "notes.txt")

	out := filepath.Join(cl.dir, "pulled")
	cl.run(oras, "pull", "--plain-http", "-o", out, ref)
	if b, err := os.ReadFile(filepath.Join(out, "notes.txt")); err != nil || string(b) != "pushed by a token of team-a\n" {
		t.Fatalf("oras pull after login: %q, %v", b, err)
	}
	if got, _, err := ar.admin.getManifest(context.Background(), "team-a/notes", "v1"); err != nil {
		t.Fatal(err)
	} else if got.Get("Docker-Content-Digest") != pushed.Digest.String() {
		t.Errorf("team-a/notes:v1 is %s, oras pushed %s", got.Get("Docker-Content-Digest"), pushed.Digest)
	}

	cl.run(oras, "logout", ar.reg.addr)
	wantRefused(t, cl, unauthorizedHints, oras, "pull", "--plain-http", "-o", filepath.Join(cl.dir, "again"), ref)
}

// TestCraneAuthLogin logs crane in and checks that the catalog shows a
// token the repositories it may read, and nothing else.
func TestCraneAuthLogin(t *testing.T) {
	crane := requireTool(t, "crane")
	ar := startAuthRegistry(t)
	cl := newClients(t)
	rng := newRand(t)
	for _, repo := range []string{"team-a/one", "team-a/two", "team-b/other"} {
		ar.admin.pushImage(t, repo, "v1", newTestImage(t, rng, 1<<10))
	}
	catalog := func() []string {
		var c struct {
			Repositories []string `json:"repositories"`
		}
		out := cl.run(crane, "catalog", "--insecure", "--full-ref=false", ar.reg.addr)
		if strings.HasPrefix(strings.TrimSpace(out), "{") {
			if err := json.Unmarshal([]byte(out), &c); err != nil {
				t.Fatal(err)
			}
			return c.Repositories
		}
		return strings.Fields(out)
	}

	wantRefused(t, cl, unauthorizedHints, crane, "catalog", "--insecure", ar.reg.addr)
	cl.run(crane, "auth", "login", "--insecure", "-u", ar.pusher.user, "-p", ar.pusher.password, ar.reg.addr)
	if got := catalog(); !slices.Equal(got, []string{"team-a/one", "team-a/two"}) {
		t.Errorf("team-a's token sees the catalog %q, want [team-a/one team-a/two]", got)
	}
	cl.run(crane, "tag", "--insecure", ar.reg.addr+"/team-a/one:v1", "v2")
	wantRefused(t, cl, deniedHints, crane, "manifest", "--insecure", ar.reg.addr+"/team-b/other:v1")
	wantRefused(t, cl, deniedHints, crane, "delete", "--insecure", ar.reg.addr+"/team-a/one:v2")

	cl.run(crane, "auth", "login", "--insecure", "-u", "admin", "-p", authAdminPassword, ar.reg.addr)
	if got := catalog(); !slices.Equal(got, []string{"team-a/one", "team-a/two", "team-b/other"}) {
		t.Errorf("the admin sees the catalog %q, want all three repositories", got)
	}
}

// TestContainerdPullWithCredentials pulls with ctr's --user, which takes
// containerd's resolver through the bearer token flow.
func TestContainerdPullWithCredentials(t *testing.T) {
	testenv.Root(t, "containerd needs root to run")
	containerd := requireTool(t, "containerd")
	ctr := requireTool(t, "ctr")
	ar := startAuthRegistry(t)
	img := newTestImage(t, newRand(t), 4<<10, 200<<10)
	ar.admin.pushImage(t, "team-a/app", "v1", img)
	sock := startContainerd(t, containerdSetup{bin: containerd, ctr: ctr})
	cl := newClients(t)
	ref := ar.reg.addr + "/team-a/app:v1"
	pull := func(user ...string) []string {
		args := []string{"--address", sock, "--namespace", "e2e", "image", "pull", "--plain-http", "--snapshotter", "native"}
		if len(user) > 0 {
			args = append(args, "--user", user[0])
		}
		return append(args, ref)
	}

	wantRefused(t, cl, unauthorizedHints, ctr, pull()...)
	wantRefused(t, cl, unauthorizedHints, ctr, pull(ar.puller.user+":wrong-password")...)
	cl.run(ctr, pull(ar.puller.String())...)
	got := cl.run(ctr, "--address", sock, "--namespace", "e2e", "content", "get", img.ManifestDigest.String())
	if got != string(img.Manifest) {
		t.Errorf("containerd stored manifest\n%s\nwant\n%s", got, img.Manifest)
	}
}
