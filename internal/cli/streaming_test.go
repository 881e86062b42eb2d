package cli

import (
	"strings"
	"testing"
)

// TestConvertExisting: enabling streaming with --convert-existing converts
// every image the repository's tags point at, once each (two tags of one
// image make one conversion), waits for them, and says what it skipped; an
// image that streams already is not converted again. check-expansion tells
// an image the repository would stream but that has no artifact yet from
// a repository that does not stream.
func TestConvertExisting(t *testing.T) {
	tr := newTestRegistry(t)
	tr.must("login", "existing", "--url", tr.ts.URL, "-u", adminUser, "-p", adminPassword)
	one := tr.pushImage("old/app", "1.0", "amd64", map[string]string{"a": "one"})
	tr.pushImage("old/app", "latest", "amd64", map[string]string{"a": "one"}) // the same image
	two := tr.pushImage("old/app", "2.0", "arm64", map[string]string{"a": "two"})
	tr.pushBlob("old/app", []byte("{}"), "application/vnd.oci.empty.v1+json")
	tr.pushManifest("old/app", "notes", "application/vnd.oci.image.manifest.v1+json", map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "artifactType": "application/vnd.example.notes",
		"config": map[string]any{"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2}},
	})

	if got := tr.must("teleport", "check-expansion", "old/app", "1.0").stdout; got != "not enabled\n" {
		t.Errorf("check-expansion before streaming is enabled: %q", got)
	}
	tr.must("artifact-streaming", "update", "--repository", "old/app", "--enable-streaming", "true")
	r := tr.must("teleport", "check-expansion", "old/app", "1.0", "--query", "details", "-o", "tsv")
	if !strings.Contains(r.stdout, "--convert-existing") {
		t.Errorf("check-expansion of an image pushed before streaming was on: %q", r.stdout)
	}
	if got := tr.must("teleport", "check-expansion", "old/app", "1.0").stdout; got != "no streaming artifact yet\n" {
		t.Errorf("check-expansion of an image pushed before streaming was on: %q", got)
	}

	r = tr.must("artifact-streaming", "update", "--repository", "old/app", "--enable-streaming", "true", "--convert-existing")
	ops, _ := field(r.value, "operations").([]any)
	if len(ops) != 2 {
		t.Fatalf("--convert-existing started %d conversions, want one per image (2): %s", len(ops), r.stdout)
	}
	resources := map[string]bool{}
	for _, op := range ops {
		if field(op, "status") != "Succeeded" {
			t.Errorf("conversion after waiting: %v", op)
		}
		resources[field(op, "resource").(string)] = true
	}
	if !resources["old/app@"+one.Digest.String()] || !resources["old/app@"+two.Digest.String()] {
		t.Errorf("converted %v, want both images", resources)
	}
	if skipped, _ := field(r.value, "skipped").([]any); len(skipped) != 1 || field(skipped[0], "tag") != "notes" {
		t.Errorf("skipped %v, want the notes artifact", skipped)
	}
	for _, tag := range []string{"1.0", "latest", "2.0"} {
		if got := tr.must("teleport", "check-expansion", "old/app", tag).stdout; got != "layers ready\n" {
			t.Errorf("check-expansion of %s after --convert-existing: %q", tag, got)
		}
	}
	// Again: nothing is converted a second time.
	r = tr.must("artifact-streaming", "update", "--repository", "old/app", "--enable-streaming", "true", "--convert-existing", "--no-wait")
	for _, op := range field(r.value, "operations").([]any) {
		if d, _ := field(op, "details").(string); !strings.Contains(d, "not converted again") {
			t.Errorf("a second --convert-existing: %v", op)
		}
	}
	if got := tr.must("repository", "show", "--repository", "old/app", "--query", "streaming.convertPushedImages", "-o", "tsv").stdout; got != "true\n" {
		t.Errorf("repository show's streaming setting: %q", got)
	}
}
