package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/lazypull"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// goldenCase is one command run against the test registry; its output in
// JSON, table and tsv form is compared with testdata/golden/NAME.golden.
type goldenCase struct {
	name string
	args []string
	code int
	// before and after run around the command (pushes, workers, saving a
	// value for later commands).
	before func(tr *testRegistry)
	after  func(tr *testRegistry, r result)
}

// TestGolden runs every command against a real registry (sluiced
// in-process, authentication on) in the order of a user's session, and
// compares each result in JSON, table and tsv with its golden file. Run
// with -update to rewrite them.
func TestGolden(t *testing.T) {
	tr := newTestRegistry(t)
	tr.vars["url"] = tr.ts.URL
	tr.vars["host"] = tr.host
	for _, c := range goldenCases() {
		if c.before != nil {
			c.before(tr)
		}
		r := tr.run(c.args...)
		if r.code != c.code {
			t.Fatalf("%s: sluice %s: exit %d, want %d\n%s%s", c.name, strings.Join(c.args, " "), r.code, c.code, r.stdout, r.stderr)
		}
		checkGolden(t, c.name, tr.goldenText(c, r))
		if c.after != nil {
			c.after(tr, r)
		}
	}
}

// goldenText is what a golden file holds: the command line, the exit code,
// the result in each format (or the output as printed, for a command
// given -o or --query, or one that prints text), and stderr.
func (tr *testRegistry) goldenText(c goldenCase, r result) string {
	var b strings.Builder
	b.WriteString("$ sluice " + tr.normalizeText(strings.Join(c.args, " ")) + "\n")
	b.WriteString("exit " + strconv.Itoa(r.code) + "\n")
	explicit := false
	for _, a := range c.args {
		if a == "-o" || a == "--output" || a == "--query" || strings.HasPrefix(a, "--output=") {
			explicit = true
		}
	}
	switch {
	case r.value == nil || explicit:
		b.WriteString("-- stdout --\n" + r.stdout)
	default:
		b.WriteString("-- json --\n" + r.stdout)
		for _, format := range []string{"table", "tsv"} {
			var out bytes.Buffer
			if err := (&output{format: format}).write(&out, r.value, r.table); err != nil {
				out.WriteString("error: " + err.Error() + "\n")
			}
			b.WriteString("-- " + format + " --\n" + out.String())
		}
	}
	if r.stderr != "" {
		b.WriteString("-- stderr --\n" + tr.normalizeText(r.stderr))
	}
	return b.String()
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v (run go test -update to write it)", name, err)
	}
	if string(want) != got {
		t.Errorf("%s differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", name, path, got, want)
	}
}

// Images of the session, built deterministically.
var (
	appFiles10 = map[string]string{"etc/os-release": "ID=golden\n", "app/main.py": "print('1.0')\n"}
	appFiles11 = map[string]string{"etc/os-release": "ID=golden\n", "app/main.py": "print('1.1')\n"}
	appFiles20 = map[string]string{"app/main.py": "print('2.0')\n"}
)

// pushReferrer pushes a small artifact whose subject is d.
func (tr *testRegistry) pushReferrer(repo, artifactType string, subject ocispec.Descriptor, content string) ocispec.Descriptor {
	blob := tr.pushBlob(repo, []byte(content), "text/plain")
	empty := tr.pushBlob(repo, []byte("{}"), ocispec.MediaTypeEmptyJSON)
	subject.Platform = nil
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifactType,
		Config: empty, Layers: []ocispec.Descriptor{blob}, Subject: &subject}
	b, _ := json.Marshal(m)
	return tr.pushManifest(repo, digest.FromBytes(b).String(), ocispec.MediaTypeImageManifest, m)
}

// fakePull stands in for containerd's pull of an image whose manifest has
// digest dgst: its first layer streamed, its second downloaded.
func fakePull(dgst string) func(context.Context, string, lazypull.Options) (*lazypull.Result, error) {
	return func(_ context.Context, ref string, _ lazypull.Options) (*lazypull.Result, error) {
		return &lazypull.Result{Image: ref, Digest: digest.Digest(dgst), Duration: 1253700 * time.Microsecond, Layers: []lazypull.Layer{
			{Digest: digest.FromString("base layer"), Size: 29124381, Streamed: true},
			{Digest: digest.FromString("app layer"), Size: 4096},
		}}, nil
	}
}

func goldenCases() []goldenCase {
	saveOperation := func(key string) func(*testRegistry, result) {
		return func(tr *testRegistry, r result) {
			for id, n := range tr.ids {
				if id0, _ := field(r.value, "id").(string); id0 == n {
					tr.vars[key] = id
				}
			}
		}
	}
	return []goldenCase{
		{name: "login", args: []string{"login", "golden", "--url", "{url}", "-u", adminUser, "-p", adminPassword}},
		{name: "config-set", args: []string{"config", "set", "defaults.acr=golden"}},
		{name: "configure", args: []string{"configure", "--defaults", "acr=golden"}},
		{name: "config-unset", args: []string{"config", "unset", "core.output"}},
		{name: "config-get", args: []string{"config", "get"}},
		{name: "config-get-key", args: []string{"config", "get", "defaults.acr"}},
		{name: "config-get-missing", args: []string{"config", "get", "core.output"}, code: ExitNotFound},
		{name: "repository-list-empty", args: []string{"repository", "list"}},
		{name: "repository-list", args: []string{"acr", "repository", "list", "-n", "golden"}, before: func(tr *testRegistry) {
			d10 := tr.pushImage("team/app", "1.0", "amd64", appFiles10)
			tr.vars["app10"] = d10.Digest.String()
			tr.pushImage("team/app", "1.1", "amd64", appFiles11)
			amd := tr.pushImage("base/os", "", "amd64", map[string]string{"bin/sh": "amd64"})
			arm := tr.pushImage("base/os", "", "arm64", map[string]string{"bin/sh": "arm64"})
			tr.pushIndex("base/os", "1", amd, arm)
			sbom := tr.pushReferrer("team/app", "application/spdx+json", d10, `{"spdxVersion":"SPDX-2.3"}`)
			tr.pushReferrer("team/app", "application/vnd.example.signature", sbom, "signed")
		}},
		{name: "repository-show", args: []string{"repository", "show", "--repository", "team/app"}},
		{name: "repository-show-tag", args: []string{"repository", "show", "--image", "team/app:1.0"}},
		{name: "repository-show-digest", args: []string{"repository", "show", "-t", "team/app@{app10}"}},
		{name: "repository-update", args: []string{"repository", "update", "--repository", "team/app", "--write-enabled", "false", "--delete-enabled", "true"}},
		{name: "repository-update-back", args: []string{"repository", "update", "--repository", "team/app", "--write-enabled=true"}},
		{name: "repository-update-image", args: []string{"repository", "update", "--image", "team/app:1.1", "--delete-enabled", "false"}},
		{name: "repository-update-image-back", args: []string{"repository", "update", "--image", "team/app:1.1", "--delete-enabled", "true"}},
		{name: "tag-list", args: []string{"tag", "list", "--repository", "team/app"}},
		{name: "tag-list-detail", args: []string{"tag", "list", "--repository", "team/app", "--detail"}},
		{name: "streaming-show", args: []string{"artifact-streaming", "show", "--repository", "team/app"}},
		{name: "streaming-create", args: []string{"acr", "artifact-streaming", "create", "-n", "golden", "--image", "team/app:1.0"},
			after: saveOperation("op10")},
		{name: "operation-show", args: []string{"artifact-streaming", "operation", "show", "--repository", "team/app", "--id", "{op10}"}},
		{name: "operation-cancel-finished", args: []string{"artifact-streaming", "operation", "cancel", "--repository", "team/app", "--id", "{op10}"}},
		{name: "streaming-create-again", args: []string{"artifact-streaming", "create", "--image", "team/app:1.0"}},
		{name: "list-referrers", args: []string{"manifest", "list-referrers", "-r", "golden", "-n", "team/app:1.0"}},
		{name: "list-referrers-fqdn", args: []string{"manifest", "list-referrers", "golden.azurecr.io/team/app:1.0",
			"--artifact-type", "application/vnd.azure.artifact.streaming.v1"}},
		{name: "list-referrers-recursive", args: []string{"manifest", "list-referrers", "-n", "team/app:1.0", "--recursive"}},
		{name: "streaming-update", args: []string{"artifact-streaming", "update", "--repository", "team/app", "--enable-streaming", "true"}},
		{name: "operation-show-image", args: []string{"artifact-streaming", "operation", "show", "--image", "team/app:2.0"},
			before: func(tr *testRegistry) {
				tr.srv.StopWorkers()
				tr.pushImage("team/app", "2.0", "amd64", appFiles20)
			}},
		{name: "operation-cancel-image", args: []string{"artifact-streaming", "operation", "cancel", "--image", "team/app:2.0"}},
		{name: "streaming-create-no-wait", args: []string{"artifact-streaming", "create", "--image", "base/os:1", "--no-wait"}},
		{name: "streaming-create-index", args: []string{"artifact-streaming", "create", "--image", "base/os:1"},
			// The workers start once the create joined the queued
			// operation, so that it waits for that one.
			before: func(tr *testRegistry) {
				var once sync.Once
				tr.onResponse = func(req *http.Request) {
					if req.Method == "POST" && strings.Contains(req.URL.Path, "/_streaming/") {
						once.Do(tr.srv.StartWorkers)
					}
				}
			},
			after: func(tr *testRegistry, _ result) { tr.onResponse = nil }},
		{name: "operation-show-missing", args: []string{"artifact-streaming", "operation", "show", "--image", "team/app:1.1"}, code: ExitNotFound},
		{name: "manifest-show", args: []string{"manifest", "show", "-n", "team/app:1.0"}},
		{name: "manifest-show-raw", args: []string{"manifest", "show", "golden.azurecr.io/team/app:1.0", "--raw"}},
		{name: "manifest-show-metadata", args: []string{"manifest", "show-metadata", "-n", "team/app:1.0"}},
		{name: "manifest-update-metadata", args: []string{"manifest", "update-metadata", "team/app:1.0", "--write-enabled", "false"}},
		{name: "manifest-update-metadata-back", args: []string{"manifest", "update-metadata", "-n", "team/app:1.0", "--write-enabled=true"}},
		{name: "manifest-list", args: []string{"manifest", "list", "golden.azurecr.io/base/os"}},
		{name: "manifest-list-metadata", args: []string{"manifest", "list-metadata", "-n", "team/app"}},
		{name: "import", args: []string{"import", "--source", "{host}/team/app:1.1", "-t", "imported/app:1.1"}},
		{name: "import-exists", args: []string{"import", "--source", "golden/team/app:1.1", "--image", "imported/app:1.1"}, code: ExitError},
		{name: "manifest-delete", args: []string{"manifest", "delete", "-n", "team/app:1.1", "--yes"}},
		{name: "manifest-list-deleted", args: []string{"manifest", "list-deleted", "-n", "team/app"}},
		{name: "manifest-list-deleted-tags", args: []string{"manifest", "list-deleted-tags", "-n", "team/app"}},
		{name: "manifest-restore", args: []string{"manifest", "restore", "-n", "team/app:1.1"},
			// A restored image of a streaming repository is converted again.
			after: func(tr *testRegistry, _ result) { tr.waitReferrer("team/app", "1.1") }},
		{name: "repository-delete", args: []string{"repository", "delete", "--repository", "imported/app", "--yes"}},
		{name: "repository-list-deleted", args: []string{"repository", "list-deleted"}},
		{name: "repository-delete-image", args: []string{"repository", "delete", "--image", "team/app:2.0", "-y"}},
		{name: "repository-list-teleport", args: []string{"repository", "list", "--teleport-enabled"}},
		{name: "teleport-check", args: []string{"teleport", "check-expansion", "team/app", "1.0"}},
		{name: "teleport-check-json", args: []string{"teleport", "check-expansion", "base/os", "1", "-o", "json"}},
		{name: "teleport-check-not-enabled", args: []string{"teleport", "check-expansion", "base/os", "2", "--query", "status"},
			before: func(tr *testRegistry) {
				tr.pushIndex("base/os", "2", tr.pushImage("base/os", "", "amd64", map[string]string{"bin/sh": "2"}))
			}},
		{name: "token-create", args: []string{"token", "create", "--name", "node-pull", "--scope-map", "_repositories_pull"}},
		{name: "token-create-query", args: []string{"token", "create", "--name", "ci-push", "--scope-map", "_repositories_push",
			"--query", "credentials.passwords[0].value", "-o", "tsv"}},
		{name: "token-create-repository", args: []string{"token", "create", "--name", "team-b", "--repository", "team-b/*", "content/read",
			"metadata/read", "--expiration", "2030-01-31T00:00:00Z"}},
		{name: "token-list", args: []string{"token", "list"}},
		{name: "token-show", args: []string{"token", "show", "-n", "node-pull"}},
		{name: "token-update", args: []string{"token", "update", "-n", "node-pull", "--status", "disabled"}},
		{name: "token-credential-generate", args: []string{"token", "credential", "generate", "-n", "node-pull", "--password2", "--expiration-in-days", "30"}},
		{name: "token-delete", args: []string{"token", "delete", "-n", "ci-push", "--yes"}},
		{name: "scope-map-create", args: []string{"scope-map", "create", "--name", "team-a-devs", "--repository", "team-a/*", "content/read",
			"content/write", "--repository", "shared", "content/read", "--description", "team A developers"}},
		{name: "scope-map-list", args: []string{"scope-map", "list"}},
		{name: "scope-map-show", args: []string{"scope-map", "show", "--name", "_repositories_pull"}},
		{name: "scope-map-update", args: []string{"scope-map", "update", "--name", "team-a-devs", "--add-repository", "team-a/*", "content/delete",
			"--remove-repository", "shared", "content/read"}},
		{name: "scope-map-delete", args: []string{"scope-map", "delete", "--name", "team-a-devs", "--yes"}},
		{name: "show-usage", args: []string{"show-usage"}},
		{name: "show-usage-yaml", args: []string{"show-usage", "-o", "yaml"}},
		{name: "convert-remote", args: []string{"convert", "plain/app:1"},
			before: func(tr *testRegistry) {
				tr.pushImage("plain/app", "1", "amd64", map[string]string{"srv/index.html": "<p>plain</p>"})
			}},
		{name: "convert-remote-existing", args: []string{"convert", "{host}/plain/app:1", "-o", "table"}},
		{name: "list-referrers-converted", args: []string{"manifest", "list-referrers", "-n", "plain/app:1", "-o", "tsv",
			"--query", "manifests[].[artifactType, annotations.\"streaming.platform.arch\"]"}},
		{name: "pull", args: []string{"pull", "{host}/team/app:1.0"}, before: func(tr *testRegistry) { tr.pull = fakePull(tr.vars["app10"]) }},
		{name: "error-not-found", args: []string{"repository", "show", "--repository", "nope/nothing"}, code: ExitNotFound},
		{name: "error-image-not-found", args: []string{"artifact-streaming", "create", "--image", "team/app:nope"}, code: ExitNotFound},
		{name: "error-usage", args: []string{"repository", "show"}, code: ExitUsage},
		{name: "error-bad-value", args: []string{"artifact-streaming", "update", "--repository", "team/app", "--enable-streaming", "maybe"}, code: ExitUsage},
		{name: "error-unknown-registry", args: []string{"repository", "list", "-r", "elsewhere"}, code: ExitUsage},
		{name: "error-invalid-name", args: []string{"token", "create", "--name", "x", "--scope-map", "_repositories_pull"}, code: ExitError},
		{name: "error-token-exists", args: []string{"token", "create", "--name", "node-pull", "--scope-map", "_repositories_pull"}, code: ExitError},
		{name: "error-token-not-found", args: []string{"token", "delete", "--name", "ci-token", "--yes"}, code: ExitNotFound},
		{name: "logout", args: []string{"logout", "golden"}},
		{name: "error-logged-out", args: []string{"repository", "list"}, code: ExitError},
	}
}
