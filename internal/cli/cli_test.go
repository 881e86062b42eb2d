package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/streaming"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/internal/trust"
)

// TestEveryCommandHasHelp checks that every command has a short text and
// an example.
func TestEveryCommandHasHelp(t *testing.T) {
	root := NewRootCommand(&App{Getenv: func(string) string { return "" }})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Name() == "help" || sub.Name() == "completion" || sub.Hidden {
				continue
			}
			if sub.Short == "" || sub.Example == "" {
				t.Errorf("%s: no short help or example", sub.CommandPath())
			}
			walk(sub)
		}
	}
	walk(root)
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, err := runSluice(t, "completion", shell)
		if err != nil || !strings.Contains(out, "sluice") || len(out) < 1000 {
			t.Errorf("completion %s: %v\n%.200s", shell, err, out)
		}
	}
	out, err := runSluice(t, "__complete", "acr", "artifact-streaming", "")
	if err != nil || !strings.Contains(out, "create") || !strings.Contains(out, "operation") {
		t.Errorf("completing after acr: %v\n%s", err, out)
	}
	out, _ = runSluice(t, "__complete", "repository", "list", "-o", "")
	if !strings.Contains(out, "jsonc") {
		t.Errorf("completing -o: %s", out)
	}
}

// TestLoginAndConfig covers the configuration file: its mode, the first
// registry becoming the default, refused credentials, and config set/get.
func TestLoginAndConfig(t *testing.T) {
	tr := newTestRegistry(t)
	if r := tr.run("login", "golden", "--url", tr.ts.URL, "-u", adminUser, "-p", "wrong"); r.code != ExitError || !strings.Contains(r.stderr, "UNAUTHORIZED") {
		t.Fatalf("a wrong password: exit %d %s", r.code, r.stderr)
	}
	path := tr.getenv("SLUICE_CONFIG")
	if _, err := os.Stat(path); err == nil {
		t.Fatal("a refused login wrote the configuration")
	}
	r := tr.run("login", "--url", tr.ts.URL, "-u", adminUser, "--password-stdin")
	if r.code != ExitUsage {
		t.Fatalf("login without a name: exit %d", r.code)
	}
	var out, errOut bytes.Buffer
	a := &App{Stdin: strings.NewReader(adminPassword + "\n"), Stdout: &out, Stderr: &errOut, Getenv: tr.getenv}
	if code := Execute(context.Background(), a, NewRootCommand(a), []string{"login", "golden", "--url", tr.ts.URL, "-u", adminUser, "--password-stdin"}); code != 0 {
		t.Fatalf("login --password-stdin: exit %d %s", code, errOut.String())
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("configuration file: %v %v, want mode 0600", st.Mode(), err)
	}
	if st, _ := os.Stat(filepath.Dir(path)); st.Mode().Perm() != 0o700 {
		t.Errorf("configuration directory mode %v, want 0700", st.Mode().Perm())
	}
	if got := tr.must("config", "get", "defaults.acr", "--query", "value", "-o", "tsv").stdout; got != "golden\n" {
		t.Errorf("the first registry is not the default: %q", got)
	}
	tr.must("login", "second", "--url", tr.ts.URL, "-u", adminUser, "-p", adminPassword)
	tr.must("config", "set", "defaults.registry=second", "core.output=tsv")
	if got := tr.must("repository", "list").stdout; got != "" {
		t.Errorf("core.output tsv of an empty list: %q", got)
	}
	if got := tr.must("config", "get", "defaults.registry", "--query", "value").stdout; got != "second\n" {
		t.Errorf("defaults.registry: %q", got)
	}
	if r := tr.run("config", "set", "defaults.nope=x"); r.code != ExitUsage {
		t.Errorf("an unknown key: exit %d", r.code)
	}
	tr.must("config", "unset", "core.output")
	tr.must("logout", "second", "--forget")
	if got := tr.must("config", "get", "defaults", "-o", "json", "--query", "[].name").stdout; !strings.Contains(got, "acr") || strings.Contains(got, "registry") {
		t.Errorf("forgetting the default registry leaves: %s", got)
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), "second") {
		t.Errorf("logout --forget left the registry:\n%s", b)
	}
}

// fakeCredentialHelper installs docker-credential-sluicetest on PATH: a
// credential helper keeping its one secret in a file.
func fakeCredentialHelper(t *testing.T) (store string) {
	dir := t.TempDir()
	store = filepath.Join(dir, "secret.json")
	script := `#!/bin/sh
case "$1" in
store) cat > "` + store + `" ;;
get) if [ -f "` + store + `" ]; then cat "` + store + `"; else echo "credentials not found in native keychain"; exit 1; fi ;;
erase) rm -f "` + store + `" ;;
esac
`
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-sluicetest"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return store
}

// TestDockerCredentialStore: with a credential helper named in docker's
// config.json, login keeps the password there and not in the
// configuration; commands and logout use it.
func TestDockerCredentialStore(t *testing.T) {
	tr := newTestRegistry(t)
	secret := fakeCredentialHelper(t)
	dockerDir := tr.getenv("DOCKER_CONFIG")
	if err := os.MkdirAll(dockerDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dockerDir, "config.json"), []byte(`{"credsStore":"sluicetest"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := tr.must("login", "golden", "--url", tr.ts.URL, "-u", adminUser, "-p", adminPassword, "--query", "credentialStore", "-o", "tsv")
	if r.stdout != "docker\n" {
		t.Fatalf("credentialStore %q, want docker", r.stdout)
	}
	cfg, _ := os.ReadFile(tr.getenv("SLUICE_CONFIG"))
	if strings.Contains(string(cfg), adminPassword) {
		t.Fatalf("the password is in the configuration:\n%s", cfg)
	}
	if b, err := os.ReadFile(secret); err != nil || !strings.Contains(string(b), adminPassword) {
		t.Fatalf("the credential helper has %q (%v)", b, err)
	}
	tr.must("repository", "list")
	tr.must("logout")
	if _, err := os.Stat(secret); err == nil {
		t.Error("logout left the password in the credential helper")
	}
}

// TestTokenPasswordWorks: the password that --query ... -o tsv prints is
// the token's, and it pulls but does not push.
func TestTokenPasswordWorks(t *testing.T) {
	tr := newTestRegistry(t)
	tr.login()
	tr.pushImage("team/app", "1.0", "amd64", appFiles10)
	var out bytes.Buffer
	a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: io.Discard, Getenv: tr.getenv}
	args := []string{"acr", "token", "create", "--name", "node-pull", "--scope-map", "_repositories_pull", "--query", "credentials.passwords[0].value", "-o", "tsv"}
	if code := Execute(context.Background(), a, NewRootCommand(a), args); code != 0 {
		t.Fatalf("token create: exit %d", code)
	}
	password := strings.TrimSpace(out.String())
	if len(password) < 20 || strings.ContainsAny(password, "\t\" ") {
		t.Fatalf("password %q", password)
	}
	get := func(method, path string) int {
		req, _ := http.NewRequest(method, tr.ts.URL+path, nil)
		req.SetBasicAuth("node-pull", password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("GET", "/v2/team/app/manifests/1.0"); code != http.StatusOK {
		t.Errorf("pull with the token: %d", code)
	}
	if code := get("POST", "/v2/team/app/blobs/uploads/"); code != http.StatusForbidden && code != http.StatusUnauthorized {
		t.Errorf("push with a pull token: %d", code)
	}
}

// TestWaitShowsProgressAndStopsOnInterrupt: on a terminal, waiting draws
// a progress bar; Ctrl-C stops the wait only, says how to follow and
// cancel, and leaves the conversion queued.
func TestWaitShowsProgressAndStopsOnInterrupt(t *testing.T) {
	tr := newTestRegistry(t)
	tr.login()
	tr.srv.StopWorkers()
	tr.pushImage("team/app", "1.0", "amd64", appFiles10)
	var out, errOut testenv.SyncBuffer
	a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: tr.getenv,
		Terminal: func(s any) bool { return s == any(&errOut) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- Execute(ctx, a, NewRootCommand(a), []string{"artifact-streaming", "create", "--image", "team/app:1.0"})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(errOut.String(), "Converting [") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != ExitInterrupted {
		t.Fatalf("exit %d after Ctrl-C, want %d; stderr:\n%s", code, ExitInterrupted, errOut.String())
	}
	stderr := errOut.String()
	for _, want := range []string{"Converting [", "NotStarted", "Stopped waiting", "goes on in the registry",
		"sluice artifact-streaming operation show -r golden --repository team/app --id ", "sluice artifact-streaming operation cancel -r golden"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if out.String() != "" {
		t.Errorf("stdout after Ctrl-C: %q", out.String())
	}
	if got := tr.must("artifact-streaming", "operation", "show", "--image", "team/app:1.0", "--query", "status", "-o", "tsv").stdout; got != "NotStarted\n" {
		t.Errorf("after Ctrl-C the operation is %q, want it still queued", got)
	}
	// Not a terminal: nothing but the final JSON.
	tr.srv.StartWorkers()
	r := tr.must("artifact-streaming", "create", "--image", "team/app:1.0")
	if r.stderr != "" || field(r.value, "status") != "Succeeded" {
		t.Errorf("without a terminal: status %v, stderr %q", field(r.value, "status"), r.stderr)
	}
}

// TestConvertWithoutReferrersAPI converts an image in a registry that has
// no referrers API (Sluice behind a proxy hiding it): the streaming
// manifest goes into the referrers tag, where list-referrers finds it.
func TestConvertWithoutReferrersAPI(t *testing.T) {
	tr := newTestRegistry(t)
	loginWithoutReferrersAPI(tr)
	d := tr.pushImage("plain/app", "1", "amd64", map[string]string{"a": strings.Repeat("x", 100000)})
	r := tr.must("convert", "plain/app:1")
	items, _ := r.value.([]any)
	if len(items) != 1 || field(items[0], "referrersSchema") != "tag" || field(items[0], "layers") != float64(1) {
		t.Fatalf("convert: %s", r.stdout)
	}
	streamingDigest, _ := field(items[0], "manifest.digest").(string)
	tag := strings.Replace(d.Digest.String(), ":", "-", 1)
	resp, body := tr.do("GET", "/v2/plain/app/manifests/"+tag, "", nil)
	var idx ocispec.Index
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &idx) != nil || len(idx.Manifests) != 1 ||
		idx.Manifests[0].Digest.String() != streamingDigest || idx.Manifests[0].ArtifactType != streaming.ArtifactType {
		t.Fatalf("referrers tag %s: %d %s", tag, resp.StatusCode, body)
	}
	r = tr.must("manifest", "list-referrers", "-n", "plain/app:1", "--query", "manifests[0].digest", "-o", "tsv")
	if strings.TrimSpace(r.stdout) != streamingDigest {
		t.Errorf("list-referrers through the tag: %q, want %s", r.stdout, streamingDigest)
	}
	// The converted layer is a valid streaming layer of the original.
	resp, body = tr.do("GET", "/v2/plain/app/manifests/"+streamingDigest, "", nil)
	var m ocispec.Manifest
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &m) != nil || m.Subject == nil || m.Subject.Digest != d.Digest ||
		m.Layers[0].Annotations[streaming.AnnotationSourceDigest] == "" {
		t.Fatalf("streaming manifest: %s", body)
	}
	_, layer := tr.do("GET", "/v2/plain/app/blobs/"+m.Layers[0].Digest.String(), "", nil)
	if digest.FromBytes(layer) != m.Layers[0].Digest {
		t.Fatal("converted layer digest mismatch")
	}
	// Again: skipped, the artifact found through the tag.
	if r := tr.must("convert", "plain/app:1", "--query", "[0].existing", "-o", "tsv"); r.stdout != "true\n" {
		t.Errorf("second convert: %q", r.stdout)
	}
}

// loginWithoutReferrersAPI logs in, as the default registry, to the test
// registry behind a proxy that hides its referrers API, as a registry
// without one would answer.
func loginWithoutReferrersAPI(tr *testRegistry) {
	tr.t.Helper()
	inner := tr.srv.Handler()
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/referrers/") {
			http.Error(w, `{"errors":[{"code":"NOT_FOUND","message":"no referrers API"}]}`, http.StatusNotFound)
			return
		}
		inner.ServeHTTP(noSubjectHeader{w}, r)
	}))
	tr.t.Cleanup(proxy.Close)
	tr.must("login", "old", "--url", proxy.URL, "-u", adminUser, "-p", adminPassword)
}

// noSubjectHeader hides OCI-Subject, as a registry without the referrers
// API would not send it.
type noSubjectHeader struct{ http.ResponseWriter }

func (w noSubjectHeader) WriteHeader(code int) {
	w.Header().Del("OCI-Subject")
	w.ResponseWriter.WriteHeader(code)
}

func (w noSubjectHeader) Write(b []byte) (int, error) {
	w.Header().Del("OCI-Subject")
	return w.ResponseWriter.Write(b)
}

// TestEnvironmentCredentials: $SLUICE_USERNAME/$SLUICE_PASSWORD and a
// registry given by address, without a login.
func TestEnvironmentCredentials(t *testing.T) {
	tr := newTestRegistry(t)
	tr.getenv = withCredentials(tr.getenv, adminUser, adminPassword)
	tr.pushImage("team/app", "1.0", "amd64", appFiles10)
	if r := tr.must("tag", "list", "-r", tr.host, "--repository", "team/app", "-o", "tsv"); r.stdout != "1.0\n" {
		t.Errorf("tag list by address: %q", r.stdout)
	}
	if r := tr.run("repository", "list"); r.code != ExitUsage || !strings.Contains(r.stderr, "config set defaults.acr") {
		t.Errorf("no registry: exit %d %s", r.code, r.stderr)
	}
}

// TestConvertSigns: --sign-key creates a key on first use, prints its
// public key, and pushes a signature beside each streaming artifact that
// nodes can read from the referrers list itself, in the referrers tag
// schema too; a second key's convert signs the same artifact.
func TestConvertSigns(t *testing.T) {
	tr := newTestRegistry(t)
	loginWithoutReferrersAPI(tr)
	d := tr.pushImage("signed/app", "1", "amd64", map[string]string{"a": strings.Repeat("x", 1000)})
	keyFile := filepath.Join(t.TempDir(), "ci", "signing.pem")

	r := tr.must("convert", "--sign-key", keyFile, "signed/app:1")
	if !strings.Contains(r.stderr, "Created the signing key "+keyFile) || !strings.Contains(r.stderr, "BEGIN PUBLIC KEY") {
		t.Fatalf("first use of the key does not announce it: %s", r.stderr)
	}
	keys, err := trust.ReadPublicKeys(keyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	items, _ := r.value.([]any)
	streamingDigest, _ := field(items[0], "manifest.digest").(string)
	if len(items) != 1 || field(items[0], "signedBy") != keys.IDs()[0] || field(items[0], "signature") == "" {
		t.Fatalf("convert --sign-key: %s", r.stdout)
	}
	signedWith := func(keys trust.KeySet) int {
		t.Helper()
		tag := strings.Replace(d.Digest.String(), ":", "-", 1)
		resp, body := tr.do("GET", "/v2/signed/app/manifests/"+tag, "", nil)
		var idx ocispec.Index
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &idx) != nil {
			t.Fatalf("referrers tag %s: %d %s", tag, resp.StatusCode, body)
		}
		n := 0
		for _, m := range idx.Manifests {
			if m.ArtifactType != trust.SignatureArtifactType {
				continue
			}
			st, _, err := keys.Verify(m.Annotations[trust.AnnotationSignature])
			if err == nil && st.Subject == d.Digest && st.Manifest.String() == streamingDigest {
				n++
			}
		}
		return n
	}
	if n := signedWith(keys); n != 1 {
		t.Fatalf("%d signatures by the key in the referrers tag, want 1", n)
	}
	if r := tr.must("convert", "--sign-key", keyFile, "signed/app:1", "--query", "[0].existing", "-o", "tsv"); r.stdout != "true\n" || strings.Contains(r.stderr, "Created") {
		t.Errorf("second convert with the same key: %q %q", r.stdout, r.stderr)
	}
	other := filepath.Join(t.TempDir(), "other.pem")
	r = tr.must("convert", "--sign-key", other, "signed/app:1")
	items, _ = r.value.([]any)
	if field(items[0], "existing") == true || field(items[0], "manifest.digest") != streamingDigest {
		t.Fatalf("convert with another key: %s, want the same artifact signed again", r.stdout)
	}
	otherKeys, _ := trust.ReadPublicKeys(other + ".pub")
	if signedWith(otherKeys) != 1 || signedWith(keys) != 1 {
		t.Fatal("each key should have signed the artifact once")
	}
	if r := tr.run("convert", "--sign-key", keyFile, "oci:"+t.TempDir()); r.code == 0 || !strings.Contains(r.stderr, "not pushed") {
		t.Errorf("--sign-key with a layout: exit %d %s", r.code, r.stderr)
	}
}
