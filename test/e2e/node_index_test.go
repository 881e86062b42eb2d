//go:build linux

package e2e

import (
	"encoding/json"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestNodeIndexPulls: a multi-platform image streams the same whether it
// is pulled by tag, by the index's digest or by the digest of the node's
// platform manifest inside the index. The index is converted on request
// in a repository without auto-streaming, so its streaming artifacts have
// the index as subject and the platform manifests have none of their own:
// a pull by the platform manifest's digest finds the index through the
// registry (GET /acr/v1/{repo}/_indexes/{digest}). Each pull is of its own
// index (its own layers), so that no pull finds the layers of another
// already on the node.
func TestNodeIndexPulls(t *testing.T) {
	f := requireNode(t)
	skopeo := requireTool(t, "skopeo")
	reg := startSluiced(t, t.TempDir(), "SLUICE_AUTH_ENABLED=true", "SLUICE_ADMIN_USER="+nodeAdmin, "SLUICE_ADMIN_PASSWORD="+nodeAdminPassword)
	admin := newOCIClient(t, reg.addr).as(nodeAdmin, nodeAdminPassword)
	password := createPullToken(t, admin, nodeToken)
	cl := newClients(t)
	rng := newRand(t)
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}

	type indexed struct {
		img *nodeImage
		ix  *testIndex
	}
	push := func(name string) indexed {
		img := newNodeImage(t, name, "e2e/node/index-"+name, ocispec.ImageConfig{Cmd: []string{"echo", "streamed-ok"}},
			map[string][]byte{"data/blob.bin": compressibleBytes(rng, 256<<10)})
		ix := newTestIndex(t, img.testImage, newPlatformImage(t, rng, other, 32<<10))
		src := filepath.Join(cl.dir, name)
		ix.writeLayout(t, src, "v1")
		cl.run(skopeo, "--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
			"--dest-creds", nodeAdmin+":"+nodeAdminPassword, "oci:"+src+":v1", "docker://"+img.ref(reg.addr))
		loc, _ := admin.startConversion(t, img.repo, ix.Digest.String())
		admin.waitSucceeded(t, loc, conversionTimeout)
		admin.waitStreamingReferrers(t, img.repo, ix.Digest, 2, conversionTimeout)
		if own := admin.referrers(t, img.repo, img.ManifestDigest, artifactTypeStreaming); len(own) != 0 {
			t.Fatalf("the %s manifest %s has %d streaming artifacts of its own, want none (only the index's)", runtime.GOARCH, img.ManifestDigest, len(own))
		}
		return indexed{img, ix}
	}
	byTag, byIndex, byPlatform := push("tag"), push("digest"), push("platform")

	n := startNode(t, f, snapshotterOptions{registry: reg.addr, user: nodeToken, password: password,
		cacheMaxBytes: 1 << 30, backgroundDelay: "1h"}, nil)
	repoRef := func(x indexed) string { return reg.addr + "/" + x.img.repo }
	for _, tc := range []struct {
		name string
		x    indexed
		ref  string
	}{
		{"by tag", byTag, byTag.img.ref(reg.addr)},
		{"by the index's digest", byIndex, repoRef(byIndex) + "@" + byIndex.ix.Digest.String()},
		{"by the " + runtime.GOARCH + " manifest's digest", byPlatform, repoRef(byPlatform) + "@" + byPlatform.img.ManifestDigest.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := n.cl.run(sluiceBin, "pull", tc.ref, "--address", n.sock, "--namespace", nodeNamespace, "--plain-http")
			var res pullResult
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("sluice pull printed what is not its JSON result: %v\n%s", err, out)
			}
			if len(res.Layers) != len(tc.x.img.Layers) {
				t.Fatalf("sluice pull %s reports %d layers, want %d:\n%s", tc.ref, len(res.Layers), len(tc.x.img.Layers), out)
			}
			for i, l := range res.Layers {
				if l.Digest != tc.x.img.Layers[i].Digest || !l.Streamed {
					t.Errorf("layer %d: %s streamed %v; want %s streamed", i, l.Digest, l.Streamed, tc.x.img.Layers[i].Digest)
				}
			}
			if lines := n.sn.logLines("layer streamed", "image", tc.ref); len(lines) != len(tc.x.img.Layers) {
				t.Errorf("the snapshotter logged %d layers streamed for %s, want %d", len(lines), tc.ref, len(tc.x.img.Layers))
			}
			if fallbacks := n.sn.logLines("layer not streamed; containerd downloads it", "image", tc.ref); len(fallbacks) > 0 {
				t.Errorf("the snapshotter fell back for %s:\n%s", tc.ref, strings.Join(fallbacks, "\n"))
			}
			// A container runs on the streamed layers.
			stdout, stderr, err := n.cl.try(n.flavor.ctr, "--address", n.sock, "--namespace", nodeNamespace, "run", "--rm", "--snapshotter", "sluice",
				tc.ref, "e2e-index-"+strings.ReplaceAll(tc.x.img.name, "/", "-"), "/bin/busybox", "cat", "/etc/streamed.txt")
			if err != nil || stdout != streamedText {
				t.Errorf("ctr run of %s printed %q (%v), want %q\nstderr:\n%s", tc.ref, stdout, err, streamedText, stderr)
			}
		})
	}
}
