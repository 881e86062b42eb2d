//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/streaming"
)

// maliciousMaxEntries is the node's limits.maxEntries in
// TestNodeMaliciousRegistry: the test images' layers have fewer entries,
// the crowded one more.
const maliciousMaxEntries = 200

// TestNodeMaliciousRegistry: a registry that serves streaming artifacts
// whose TOC or chunk table lies (made by hand from an honest conversion of
// the image, then planted; the node trusts any artifact of this registry,
// as it would a registry that signs what it serves) never gets a lying
// layer mounted. The node refuses the layer before reading any of its
// data, logs why, counts the reason, and containerd downloads the
// original, which the container then reads. Layers over the node's limits
// are refused the same way (over_limit), the TOC's stored size before it
// is fetched.
func TestNodeMaliciousRegistry(t *testing.T) {
	f := requireNode(t)
	skopeo := requireTool(t, "skopeo")
	reg := startSluiced(t, t.TempDir(), "SLUICE_AUTH_ENABLED=true", "SLUICE_ADMIN_USER="+nodeAdmin, "SLUICE_ADMIN_PASSWORD="+nodeAdminPassword)
	admin := newOCIClient(t, reg.addr).as(nodeAdmin, nodeAdminPassword)
	password := createPullToken(t, admin, nodeToken)
	n := startNode(t, f, snapshotterOptions{registry: reg.addr, user: nodeToken, password: password, trust: "any",
		cacheMaxBytes: 1 << 30, backgroundDelay: "1h",
		limits: []string{fmt.Sprintf("maxEntries: %d", maliciousMaxEntries)}}, nil)
	rng := newRand(t)
	cl := newClients(t)

	for _, tc := range []struct {
		name string
		// files are the data layer's files besides the secret.
		files  int
		lie    func(t *testing.T, l *lyingLayer)
		reason string
		// says is in the fallback's log line.
		says string
	}{
		{name: "overlapping chunks", lie: func(t *testing.T, l *lyingLayer) {
			l.toc.Chunks[1].Offset = l.toc.Chunks[0].Offset
			l.rewrite(t)
		}, reason: "bad_artifact", says: "chunks must be contiguous"},
		{name: "a chunk outside the blob", lie: func(t *testing.T, l *lyingLayer) {
			l.toc.Chunks[len(l.toc.Chunks)-1].Size += 1 << 20
			l.rewrite(t)
		}, reason: "bad_artifact", says: "does not fit the"},
		{name: "sizes that disagree", lie: func(t *testing.T, l *lyingLayer) {
			l.toc.UncompressedSize += 512
			l.rewrite(t)
		}, reason: "bad_artifact", says: "uncompressed bytes, TOC says"},
		{name: "a file's data past the tar", lie: func(t *testing.T, l *lyingLayer) {
			for i := range l.toc.Entries {
				if e := &l.toc.Entries[i]; e.Type == streaming.TypeReg && e.Size > 0 {
					e.Offset = l.toc.UncompressedSize
				}
			}
			l.rewrite(t)
		}, reason: "bad_artifact", says: "open streamed layer"},
		{name: "a footer pointing elsewhere", lie: func(t *testing.T, l *lyingLayer) {
			l.rewrite(t)
			l.footer.TOCOffset, l.footer.TOCSize = 0, l.footer.TOCOffset+l.footer.TOCSize
			l.writeFooter(t)
		}, reason: "bad_artifact", says: "open streamed layer"},
		{name: "a TOC digest that does not match", lie: func(t *testing.T, l *lyingLayer) {
			l.desc.Annotations[streaming.AnnotationTOCDigest] = digest.FromString("another TOC").String()
		}, reason: "bad_artifact", says: "TOC digest is"},
		{name: "a footer promising a TOC of a terabyte", lie: func(t *testing.T, l *lyingLayer) {
			l.footer.TOCUncompressedSize = 1 << 40
			l.writeFooter(t)
		}, reason: "over_limit", says: "maxTOCJSONBytes"},
		{name: "a TOC annotated over maxTOCBytes", lie: func(t *testing.T, l *lyingLayer) {
			l.desc.Annotations[streaming.AnnotationTOCSize] = fmt.Sprint(1 << 30)
		}, reason: "over_limit", says: "limits.maxTOCBytes"},
		{name: "more entries than maxEntries", files: maliciousMaxEntries + 50, reason: "over_limit", says: "maxEntries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "malicious-" + regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(tc.name), "-")
			files := map[string][]byte{strings.TrimPrefix(secretPath, "/"): []byte(trueSecret),
				"data/blob.bin": compressibleBytes(rng, 256<<10)}
			for i := range tc.files {
				files[fmt.Sprintf("data/many/f%04d", i)] = []byte{byte(i)}
			}
			img := newNodeImage(t, name, "e2e/malicious/"+name, ocispec.ImageConfig{Cmd: []string{"cat", secretPath}}, files)
			src := filepath.Join(cl.dir, name)
			img.writeLayout(t, src, "v1")
			cl.run(skopeo, "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false",
				"--dest-creds", nodeAdmin+":"+nodeAdminPassword, "oci:"+src+":v1", "docker://"+img.ref(reg.addr))
			plantLyingArtifact(t, admin, img, tc.lie)

			metric := fmt.Sprintf(`sluice_snapshotter_fallbacks_total{reason=%q}`, tc.reason)
			before := n.sn.metrics()[metric]
			res := n.pull(img)
			last := len(img.Layers) - 1
			for i, l := range res.Layers {
				if l.Streamed != (i != last) {
					t.Errorf("layer %d %s streamed %v; want only the honest layers streamed", i, l.Digest, l.Streamed)
				}
			}
			if got := n.sn.metrics()[metric] - before; got != 1 {
				t.Errorf("%s went up by %v, want 1", metric, got)
			}
			lines := n.sn.logLines("layer not streamed; containerd downloads it", "layer="+img.Layers[last].Digest.String())
			if len(lines) != 1 || !strings.Contains(lines[0], tc.says) {
				t.Errorf("the snapshotter's fallback line for the lying layer does not say %q: %q", tc.says, lines)
			}
			// The container reads the downloaded original, never bytes
			// of the lying artifact.
			if got := n.run(img, "e2e-"+name, "cat "+secretPath); got != trueSecret {
				t.Errorf("the container read %q, want %q", got, trueSecret)
			}
		})
	}
}

// lyingLayer is a converted layer a test rewrites: its TOC, footer and
// descriptor, and the blob they describe.
type lyingLayer struct {
	blob   []byte
	desc   ocispec.Descriptor
	footer streaming.Footer
	toc    *streaming.TOC
}

// rewrite encodes l.toc as the layer's TOC frame, with a footer and
// annotations that agree with it: a lie in the TOC itself, consistent
// everywhere else.
func (l *lyingLayer) rewrite(t *testing.T) {
	t.Helper()
	frame, jsonSize := tocFrame(t, l.toc)
	l.blob = append(l.blob[:l.footer.TOCOffset:l.footer.TOCOffset], frame...)
	l.footer.TOCSize, l.footer.TOCUncompressedSize, l.footer.TOCDigest = int64(len(frame)), jsonSize, sha256.Sum256(frame)
	l.desc.Annotations[streaming.AnnotationTOCDigest] = digest.NewDigestFromBytes(digest.SHA256, l.footer.TOCDigest[:]).String()
	l.desc.Annotations[streaming.AnnotationTOCSize] = fmt.Sprint(len(frame))
	l.blob = append(l.blob, make([]byte, streaming.FooterSize)...)
	l.writeFooter(t)
}

// writeFooter writes l.footer over the blob's footer.
func (l *lyingLayer) writeFooter(t *testing.T) {
	t.Helper()
	fb, err := l.footer.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	copy(l.blob[len(l.blob)-streaming.FooterSize:], fb)
}

// plantLyingArtifact converts every layer of img (in small chunks, so that
// each has several), has lie rewrite the last one when it is set, and
// stores the result as img's streaming artifact, as the admin: what a
// malicious or compromised registry would serve.
func plantLyingArtifact(t *testing.T, admin *ociClient, img *nodeImage, lie func(t *testing.T, l *lyingLayer)) {
	t.Helper()
	var layers []ocispec.Descriptor
	for i, src := range img.Layers {
		var out bytes.Buffer
		res, err := streaming.Convert(context.Background(), bytes.NewReader(img.Blobs[src.Digest]), &out, streaming.Options{ChunkSize: 16 << 10, FileChunkSize: 16 << 10})
		if err != nil {
			t.Fatal(err)
		}
		l := &lyingLayer{blob: out.Bytes(), desc: res.Descriptor()}
		if lie != nil && i == len(img.Layers)-1 {
			if l.footer, err = streaming.ParseFooter(l.blob[len(l.blob)-streaming.FooterSize:], int64(len(l.blob))); err != nil {
				t.Fatal(err)
			}
			frame := l.blob[l.footer.TOCOffset : l.footer.TOCOffset+l.footer.TOCSize]
			if l.toc, err = streaming.DecodeTOC(frame, l.footer.TOCOffset, streaming.Limits{}); err != nil {
				t.Fatal(err)
			}
			if len(l.toc.Chunks) < 2 {
				t.Fatalf("the data layer has %d chunks, want several", len(l.toc.Chunks))
			}
			lie(t, l)
			l.desc.Digest, l.desc.Size = digest.FromBytes(l.blob), int64(len(l.blob))
		}
		l.desc.Annotations[streaming.AnnotationSourceDigest] = src.Digest.String()
		if _, err := admin.pushBlob(context.Background(), img.repo, l.blob, 1); err != nil {
			t.Fatalf("push a converted layer: %v", err)
		}
		layers = append(layers, l.desc)
	}
	m, err := json.Marshal(streaming.Manifest(img.Config, layers, img.descriptor(), img.Platform))
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.putManifest(context.Background(), img.repo, digest.FromBytes(m).String(), ocispec.MediaTypeImageManifest, m); err != nil {
		t.Fatalf("plant the streaming artifact: %v", err)
	}
}
