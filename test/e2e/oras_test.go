package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	artifactTypeBundle    = "application/vnd.sluice.e2e.bundle"
	artifactTypeSignature = "application/vnd.sluice.e2e.signature"
)

// orasDescriptor is what oras prints with --format json for push, attach
// and discover (where referrers nest).
type orasDescriptor struct {
	Reference    string           `json:"reference"`
	MediaType    string           `json:"mediaType"`
	Digest       digest.Digest    `json:"digest"`
	Size         int64            `json:"size"`
	ArtifactType string           `json:"artifactType"`
	Referrers    []orasDescriptor `json:"referrers"`
}

func decodeOras(t *testing.T, out string) orasDescriptor {
	t.Helper()
	var d orasDescriptor
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("oras printed no JSON descriptor: %v\n%s", err, out)
	}
	return d
}

// TestOrasArtifactsAndReferrers pushes an artifact of two files with oras,
// pulls it back, attaches a signature-like referrer and finds it with
// `oras discover`, which uses the referrers API.
func TestOrasArtifactsAndReferrers(t *testing.T) { onEachBackend(t, orasArtifactsAndReferrers) }

func orasArtifactsAndReferrers(t *testing.T, backend []string) {
	oras := requireTool(t, "oras")
	reg := startSluiced(t, t.TempDir(), backend...)
	cl := newClients(t)
	oc := newOCIClient(t, reg.addr)
	ctx := context.Background()
	ref := reg.addr + "/e2e/oras"

	files := map[string][]byte{
		"readme.txt": []byte("an artifact pushed by the sluice end-to-end tests\n"),
		"data.bin":   randomBytes(newRand(t), 300<<10),
		"sig.txt":    []byte("not really a signature\n"),
	}
	for name, b := range files {
		writeFile(t, filepath.Join(cl.dir, name), b)
	}

	pushed := decodeOras(t, cl.run(oras, "push", "--plain-http", "--format", "json",
		"--artifact-type", artifactTypeBundle, ref+":v1", "readme.txt:text/plain", "data.bin"))
	if pushed.ArtifactType != artifactTypeBundle {
		t.Errorf("oras push reports artifactType %q, want %q", pushed.ArtifactType, artifactTypeBundle)
	}
	h, manifest, err := oc.getManifest(ctx, "e2e/oras", "v1", ocispec.MediaTypeImageManifest)
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(manifest); got != pushed.Digest || h.Get("Docker-Content-Digest") != pushed.Digest.String() {
		t.Fatalf("tag v1 serves %s (header %q), oras pushed %s", got, h.Get("Docker-Content-Digest"), pushed.Digest)
	}

	out := filepath.Join(cl.dir, "pulled")
	cl.run(oras, "pull", "--plain-http", "-o", out, ref+":v1")
	for _, name := range []string{"readme.txt", "data.bin"} {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("oras pull did not write %s: %v", name, err)
		}
		if !bytes.Equal(got, files[name]) {
			t.Errorf("oras pulled %s with different content (%d bytes, want %d)", name, len(got), len(files[name]))
		}
	}

	fetched := cl.run(oras, "manifest", "fetch", "--plain-http", ref+"@"+pushed.Digest.String())
	if fetched != string(manifest) {
		t.Errorf("oras manifest fetch printed\n%s\nwant\n%s", fetched, manifest)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		name := l.Annotations[ocispec.AnnotationTitle]
		blob := cl.run(oras, "blob", "fetch", "--plain-http", "--output", "-", ref+"@"+l.Digest.String())
		if blob != string(files[name]) {
			t.Errorf("oras blob fetch of %s (%s) printed %d bytes that differ from the file", l.Digest, name, len(blob))
		}
	}

	attached := decodeOras(t, cl.run(oras, "attach", "--plain-http", "--format", "json",
		"--artifact-type", artifactTypeSignature, ref+":v1", "sig.txt:text/plain"))
	found := decodeOras(t, cl.run(oras, "discover", "--plain-http", "--format", "json", ref+":v1"))
	if found.Digest != pushed.Digest {
		t.Errorf("oras discover resolved v1 to %s, want %s", found.Digest, pushed.Digest)
	}
	if len(found.Referrers) != 1 || found.Referrers[0].Digest != attached.Digest || found.Referrers[0].ArtifactType != artifactTypeSignature {
		t.Fatalf("oras discover lists referrers %+v, want only %s of type %s", found.Referrers, attached.Digest, artifactTypeSignature)
	}

	// The referrers API itself, with and without the artifactType filter.
	tests := []struct {
		name, query string
		want        []digest.Digest
		filtered    bool
	}{
		{"all", "", []digest.Digest{attached.Digest}, false},
		{"matching filter", "?artifactType=" + artifactTypeSignature, []digest.Digest{attached.Digest}, true},
		{"other filter", "?artifactType=application/vnd.sluice.e2e.other", nil, true},
	}
	for _, tt := range tests {
		t.Run("referrers "+tt.name, func(t *testing.T) {
			h, body, err := oc.do(ctx, http.MethodGet, "/v2/e2e/oras/referrers/"+pushed.Digest.String()+tt.query, nil, nil, http.StatusOK)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.Get("Content-Type"); got != ocispec.MediaTypeImageIndex {
				t.Errorf("Content-Type %q, want %s", got, ocispec.MediaTypeImageIndex)
			}
			if got := h.Get("OCI-Filters-Applied") == "artifactType"; got != tt.filtered {
				t.Errorf("OCI-Filters-Applied %q, want filter applied: %v", h.Get("OCI-Filters-Applied"), tt.filtered)
			}
			var idx ocispec.Index
			if err := json.Unmarshal(body, &idx); err != nil {
				t.Fatal(err)
			}
			var got []digest.Digest
			for _, d := range idx.Manifests {
				got = append(got, d.Digest)
			}
			if len(got) != len(tt.want) || (len(got) == 1 && got[0] != tt.want[0]) {
				t.Errorf("referrers %v, want %v", got, tt.want)
			}
		})
	}
}
