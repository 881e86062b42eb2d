package conversion

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/streaming"
	"github.com/sluicehq/sluice/internal/trust"
)

func TestConvertImage(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	l1, l2 := makeLayer(t, 1, 20, 30000), makeLayer(t, 2, 5, 200000)
	img := e.pushImage("app", "v1", "linux", "arm64", l1, l2)

	op, err := e.conv.Start(ctx, "app", img.Digest, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != metadata.StatusNotStarted && op.Status != metadata.StatusRunning {
		t.Fatalf("new operation is %s", op.Status)
	}
	done := e.wait("app", op.ID)
	if done.Status != metadata.StatusSucceeded {
		t.Fatalf("operation %s: %s %s", done.Status, done.ErrorCode, done.ErrorMessage)
	}
	if done.ProgressBytes != done.TotalBytes || done.TotalBytes != int64(len(l1.blob)+len(l2.blob)) {
		t.Errorf("progress %d of %d", done.ProgressBytes, done.TotalBytes)
	}
	refs := e.streamingReferrers("app", img.Digest)
	if len(refs) != 1 {
		t.Fatalf("%d streaming referrers", len(refs))
	}
	want := map[string]string{"streaming.format": "seekable-zstd", "streaming.version": "v1", "streaming.platform.os": "linux", "streaming.platform.arch": "arm64"}
	for k, v := range want {
		if refs[0].Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, refs[0].Annotations[k], v)
		}
	}
	sm, err := e.reg.GetManifest(ctx, "app", oci.Reference{Digest: refs[0].Digest.String()}, true)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(sm.Payload, &m); err != nil {
		t.Fatal(err)
	}
	orig, _ := e.reg.GetManifest(ctx, "app", oci.Reference{Tag: "v1"}, true)
	var om ocispec.Manifest
	_ = json.Unmarshal(orig.Payload, &om)
	if m.Config.Digest != om.Config.Digest || m.Subject == nil || m.Subject.Digest != img.Digest || m.ArtifactType != streaming.ArtifactType {
		t.Fatalf("streaming manifest: config %s subject %v artifactType %s", m.Config.Digest, m.Subject, m.ArtifactType)
	}
	for i, l := range m.Layers {
		if l.MediaType != streaming.MediaTypeLayer || l.Annotations[streaming.AnnotationSourceDigest] != om.Layers[i].Digest.String() {
			t.Errorf("layer %d: %s source %s", i, l.MediaType, l.Annotations[streaming.AnnotationSourceDigest])
		}
		for _, k := range []string{streaming.AnnotationTOCDigest, streaming.AnnotationTOCOffset, streaming.AnnotationTOCSize} {
			if l.Annotations[k] == "" {
				t.Errorf("layer %d lacks %s", i, k)
			}
		}
		// Any zstd decoder gets the original tar back: the same DiffID.
		c, err := e.reg.OpenBlob(ctx, "app", l.Digest)
		if err != nil {
			t.Fatal(err)
		}
		dec, _ := zstd.NewReader(c)
		dd := digest.Canonical.Digester()
		if _, err := io.Copy(dd.Hash(), dec); err != nil {
			t.Fatal(err)
		}
		dec.Close()
		c.Close()
		if want := []layer{l1, l2}[i].diffID; dd.Digest() != want {
			t.Errorf("layer %d decompresses to %s, want %s", i, dd.Digest(), want)
		}
	}

	// Asking again neither converts again nor makes a second artifact.
	again, err := e.conv.Start(ctx, "app", img.Digest, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if again.Status != metadata.StatusSucceeded || again.ID == op.ID {
		t.Fatalf("second start: %s %s", again.ID, again.Status)
	}
	if n := len(e.streamingReferrers("app", img.Digest)); n != 1 {
		t.Fatalf("%d streaming referrers after a second start", n)
	}
	// A streaming artifact cannot be converted.
	if _, err := e.conv.Start(ctx, "app", refs[0].Digest, "admin"); !isCode(err, CodeUnsupportedArtifact) {
		t.Fatalf("converting a streaming artifact: %v", err)
	}
	if _, err := e.conv.Start(ctx, "app", digest.FromString("missing"), "admin"); !isCode(err, CodeResourceNotFound) {
		t.Fatalf("converting a missing image: %v", err)
	}
	if _, err := e.conv.Active(ctx, "app", img.Digest); !isCode(err, CodeOperationUnknown) {
		t.Fatalf("active after success: %v", err)
	}
}

func isCode(err error, code string) bool {
	e, ok := codeOf(err)
	return ok && e.Code == code
}

func TestSharedLayersAreConvertedOnce(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	base := makeLayer(t, 3, 10, 50000)
	a := e.pushImage("one", "a", "linux", "amd64", base, makeLayer(t, 4, 2, 1000))
	b := e.pushImage("two", "b", "linux", "amd64", base, makeLayer(t, 5, 2, 1000))
	for _, img := range []struct {
		repo string
		d    ocispec.Descriptor
	}{{"one", a}, {"two", b}} {
		op, err := e.conv.Start(ctx, img.repo, img.d.Digest, "admin")
		if err != nil {
			t.Fatal(err)
		}
		if got := e.wait(img.repo, op.ID); got.Status != metadata.StatusSucceeded {
			t.Fatalf("%s: %s %s", img.repo, got.Status, got.ErrorMessage)
		}
	}
	layerOf := func(repo string, d digest.Digest) digest.Digest {
		refs := e.streamingReferrers(repo, d)
		m, _ := e.reg.GetManifest(ctx, repo, oci.Reference{Digest: refs[0].Digest.String()}, true)
		var sm ocispec.Manifest
		_ = json.Unmarshal(m.Payload, &sm)
		return sm.Layers[0].Digest
	}
	if la, lb := layerOf("one", a.Digest), layerOf("two", b.Digest); la != lb {
		t.Fatalf("shared layer converted twice: %s and %s", la, lb)
	}
	for i, l := range []layer{base, makeLayer(t, 4, 2, 1000), makeLayer(t, 5, 2, 1000)} {
		if _, err := e.meta.GetConvertedLayer(ctx, digest.FromBytes(l.blob).String(), streaming.FormatVersion); err != nil {
			t.Fatalf("conversion of source layer %d not recorded: %v", i, err)
		}
	}
}

func TestAutoStreaming(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	on, off := true, false
	// Configured before the first push.
	if _, err := e.reg.UpdateRepository(ctx, "auto", metadata.RepositoryPatch{Streaming: &on}); err != nil {
		t.Fatal(err)
	}
	img := e.pushImage("auto", "v1", "linux", "amd64", makeLayer(t, 6, 3, 1000))
	op, err := e.conv.Active(ctx, "auto", img.Digest)
	if err != nil {
		// The worker may already have finished it.
		if refs := e.streamingReferrers("auto", img.Digest); len(refs) == 0 {
			e.waitReferrers("auto", img.Digest)
		}
	} else if got := e.wait("auto", op.ID); got.Status != metadata.StatusSucceeded {
		t.Fatalf("auto conversion: %s %s", got.Status, got.ErrorMessage)
	}
	e.waitReferrers("auto", img.Digest)

	// A referrer that is not an image (a signature) is not converted.
	empty := e.putBlob("auto", []byte("{}"))
	empty.MediaType = "application/vnd.oci.empty.v1+json"
	sig := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.signature",
		Config: empty, Layers: []ocispec.Descriptor{empty}, Subject: &img}
	sd := e.putManifest("auto", "", ocispec.MediaTypeImageManifest, sig)
	if _, err := e.conv.Active(ctx, "auto", sd.Digest); !isCode(err, CodeOperationUnknown) {
		t.Fatalf("signature got a conversion: %v", err)
	}
	// Turned off, pushes are no longer converted.
	if _, err := e.reg.UpdateRepository(ctx, "auto", metadata.RepositoryPatch{Streaming: &off}); err != nil {
		t.Fatal(err)
	}
	img2 := e.pushImage("auto", "v2", "linux", "amd64", makeLayer(t, 7, 3, 1000))
	if _, err := e.conv.Active(ctx, "auto", img2.Digest); !isCode(err, CodeOperationUnknown) {
		t.Fatalf("push after turning streaming off got a conversion: %v", err)
	}
	if refs := e.streamingReferrers("auto", img2.Digest); len(refs) != 0 {
		t.Fatal("push after turning streaming off was converted")
	}
}

func (e *env) waitReferrers(repo string, d digest.Digest) []ocispec.Descriptor {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if refs := e.streamingReferrers(repo, d); len(refs) > 0 {
			return refs
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("no streaming referrer for %s@%s", repo, d)
	return nil
}

func TestIndexConversion(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	amd := e.pushImage("multi", "", "linux", "amd64", makeLayer(t, 8, 2, 1000))
	arm := e.pushImage("multi", "", "linux", "arm64", makeLayer(t, 9, 2, 1000))
	win := e.pushImage("multi", "", "windows", "amd64", makeLayer(t, 10, 2, 1000))
	amd.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm.Platform = &ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	win.Platform = &ocispec.Platform{OS: "windows", Architecture: "amd64"}
	idx := e.putManifest("multi", "latest", ocispec.MediaTypeImageIndex, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{amd, arm, win}})
	op, err := e.conv.Start(ctx, "multi", idx.Digest, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.wait("multi", op.ID); got.Status != metadata.StatusSucceeded {
		t.Fatalf("index conversion: %s %s", got.Status, got.ErrorMessage)
	}
	refs := e.streamingReferrers("multi", idx.Digest)
	if len(refs) != 2 {
		t.Fatalf("%d referrers of the index, want 2 (linux only)", len(refs))
	}
	archs := map[string]string{}
	for _, r := range refs {
		archs[r.Annotations["streaming.platform.arch"]] = r.Annotations[streaming.AnnotationPlatformVariant]
	}
	if _, ok := archs["amd64"]; !ok || archs["arm64"] != "v8" {
		t.Fatalf("platforms %v", archs)
	}

	onlyWin := e.putManifest("multi", "win", ocispec.MediaTypeImageIndex, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{win}})
	op, err = e.conv.Start(ctx, "multi", onlyWin.Digest, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.wait("multi", op.ID); got.Status != metadata.StatusFailed || got.ErrorCode != CodeNoSupportedPlatform {
		t.Fatalf("windows-only index: %s %s", got.Status, got.ErrorCode)
	}
}

func TestConversionFailures(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	win := e.pushImage("bad", "win", "windows", "amd64", makeLayer(t, 11, 1, 100))
	noOS := e.pushImage("bad", "no-os", "", "amd64", makeLayer(t, 12, 1, 100)) // as crane append makes it

	cfg := e.putBlob("bad", []byte(`{"hello":"world"}`))
	cfg.MediaType = "application/vnd.example.config+json"
	l := e.putBlob("bad", []byte("not a layer"))
	l.MediaType = "application/vnd.example.data"
	artifact := e.putManifest("bad", "artifact", ocispec.MediaTypeImageManifest, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{l}})

	imgCfg := e.putBlob("bad", []byte(`{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":[]}}`))
	imgCfg.MediaType = ocispec.MediaTypeImageConfig
	noLayers := e.putManifest("bad", "empty", ocispec.MediaTypeImageManifest, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest, Config: imgCfg, Layers: []ocispec.Descriptor{}})

	corrupt := layer{blob: []byte("\x1f\x8b\x08\x00garbage that is no gzip stream"), diffID: digest.FromString("x")}
	broken := e.pushImage("bad", "corrupt", "linux", "amd64", corrupt)

	for _, tc := range []struct {
		name string
		d    ocispec.Descriptor
		code string
	}{
		{"windows image", win, CodeUnsupportedPlatform},
		{"image without os", noOS, CodeUnsupportedPlatform},
		{"artifact with a non-image config", artifact, CodeImageNotRunnable},
		{"image without layers", noLayers, CodeImageNotRunnable},
		{"corrupt layer", broken, CodeImageNotRunnable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op, err := e.conv.Start(ctx, "bad", tc.d.Digest, "admin")
			if err != nil {
				t.Fatal(err)
			}
			got := e.wait("bad", op.ID)
			if got.Status != metadata.StatusFailed || got.ErrorCode != tc.code || got.ErrorMessage == "" {
				t.Fatalf("got %s %s %q, want Failed %s", got.Status, got.ErrorCode, got.ErrorMessage, tc.code)
			}
			if got.Attempts != 1 {
				t.Errorf("a request that can never succeed was tried %d times", got.Attempts)
			}
		})
	}
}

// slowReader hands out its source a little at a time, so that a test can
// cancel a conversion in the middle.
type slowReader struct {
	r     io.Reader
	delay time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.delay)
	return s.r.Read(p[:min(len(p), 32<<10)])
}

func TestCancelRemovesPartialBlobs(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	e.conv.sourceHook = func(r io.Reader) io.Reader { return &slowReader{r: r, delay: 2 * time.Millisecond} }
	small := makeLayer(t, 12, 2, 1000)
	big := makeLayer(t, 13, 40, 100000)
	img := e.pushImage("cancel", "v1", "linux", "amd64", small, big)
	before := storedIn(t, e, "cancel")

	op, err := e.conv.Start(ctx, "cancel", img.Digest, "admin")
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the second (big) layer is being converted.
	deadline := time.Now().Add(30 * time.Second)
	for {
		cur, _ := e.conv.Get(ctx, "cancel", op.ID)
		if cur.Status == metadata.StatusRunning && cur.ProgressBytes > int64(len(small.blob)) {
			break
		}
		if !cur.Active() || time.Now().After(deadline) {
			t.Fatalf("conversion did not get going: %+v", cur)
		}
		time.Sleep(10 * time.Millisecond)
	}
	canceled, err := e.conv.Cancel(ctx, op)
	if err != nil || canceled.Status != metadata.StatusCanceled {
		t.Fatalf("cancel: %v %+v", err, canceled)
	}
	// The worker lets go promptly and takes back what it wrote.
	e.waitIdle(t, 10*time.Second, "worker still running after cancel")
	if got, _ := e.conv.Get(ctx, "cancel", op.ID); got.Status != metadata.StatusCanceled {
		t.Fatalf("status after cancel: %s", got.Status)
	}
	if refs := e.streamingReferrers("cancel", img.Digest); len(refs) != 0 {
		t.Fatal("canceled conversion left a streaming artifact")
	}
	if after := storedIn(t, e, "cancel"); after != before {
		t.Fatalf("bytes linked in the repository: %d before, %d after the canceled conversion", before, after)
	}
	entries, _ := os.ReadDir(filepath.Join(e.dir, "blobs", "uploads"))
	for _, d := range entries {
		parts, _ := os.ReadDir(filepath.Join(e.dir, "blobs", "uploads", d.Name()))
		if len(parts) > 0 {
			t.Fatalf("upload %s left %d parts", d.Name(), len(parts))
		}
	}
}

// storedIn is the size of what a repository holds: its linked blobs and
// its manifests.
func storedIn(t *testing.T, e *env, repo string) int64 {
	t.Helper()
	r, err := e.reg.Repository(context.Background(), repo)
	if err != nil {
		t.Fatal(err)
	}
	return r.Size
}

func TestOperationResumesAfterCrash(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	img := e.pushImage("crash", "v1", "linux", "amd64", makeLayer(t, 14, 5, 10000))
	op, err := e.conv.Start(ctx, "crash", img.Digest, "admin")
	if err != nil {
		t.Fatal(err)
	}
	// A worker that claims the operation and dies without a word.
	if _, err := e.meta.ClaimOperation(ctx, KindConversion, "dead-worker", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// The restarted registry's worker takes it over once the lease is out.
	e.close()
	e.open(true)
	got := e.wait("crash", op.ID)
	if got.Status != metadata.StatusSucceeded || got.Attempts != 2 {
		t.Fatalf("resumed operation: %s after %d attempts (%s)", got.Status, got.Attempts, got.ErrorMessage)
	}
	if n := len(e.streamingReferrers("crash", img.Digest)); n != 1 {
		t.Fatalf("%d streaming artifacts after resume", n)
	}
}

func TestDeleteTakesStreamingArtifacts(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	img := e.pushImage("del", "v1", "linux", "amd64", makeLayer(t, 15, 2, 1000))
	op, _ := e.conv.Start(ctx, "del", img.Digest, "admin")
	e.wait("del", op.ID)
	refs := e.streamingReferrers("del", img.Digest)
	if err := e.reg.DeleteManifest(ctx, "del", oci.Reference{Digest: img.Digest.String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.GetManifest(ctx, "del", oci.Reference{Digest: refs[0].Digest.String()}, false); err == nil {
		t.Fatal("streaming artifact survived its image")
	}
	if _, err := e.conv.Start(ctx, "del", img.Digest, "admin"); !isCode(err, CodeResourceNotFound) {
		t.Fatalf("converting a deleted image: %v", err)
	}
}

// signatures returns the streaming manifests the registry's signatures
// among the image's referrers vouch for.
func (e *env) signatures(repo string, subject digest.Digest) map[digest.Digest]bool {
	e.t.Helper()
	refs, err := e.reg.Referrers(context.Background(), repo, subject, trust.SignatureArtifactType)
	if err != nil {
		e.t.Fatal(err)
	}
	jwks, err := e.keys.JWKS()
	if err != nil {
		e.t.Fatal(err)
	}
	keys, _ := jwks.KeySet()
	out := map[digest.Digest]bool{}
	for _, d := range refs {
		st, _, err := keys.Verify(d.Annotations[trust.AnnotationSignature])
		if err != nil {
			e.t.Fatalf("signature %s: %v", d.Digest, err)
		}
		if st.Subject != subject {
			e.t.Fatalf("signature %s is of %s, not of its subject %s", d.Digest, st.Subject, subject)
		}
		out[st.Manifest] = true
	}
	return out
}

func TestConversionSignsWhatItMakes(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	img := e.pushImage("signed", "v1", "linux", "amd64", makeLayer(t, 21, 3, 5000))
	op, _ := e.conv.Start(ctx, "signed", img.Digest, "admin")
	if got := e.wait("signed", op.ID); got.Status != metadata.StatusSucceeded {
		t.Fatalf("conversion %s: %s", got.Status, got.ErrorMessage)
	}
	refs := e.streamingReferrers("signed", img.Digest)
	if sigs := e.signatures("signed", img.Digest); len(refs) != 1 || len(sigs) != 1 || !sigs[refs[0].Digest] {
		t.Fatalf("streaming artifacts %v, signed %v: want one, signed", refs, sigs)
	}

	// An artifact left without its signature (made before signatures,
	// or by hand) does not count as converted: converting again signs
	// the same artifact, and nothing else is made.
	sigs, _ := e.reg.Referrers(ctx, "signed", img.Digest, trust.SignatureArtifactType)
	if err := e.reg.DeleteArtifact(ctx, "signed", sigs[0].Digest); err != nil {
		t.Fatal(err)
	}
	again, err := e.conv.Start(ctx, "signed", img.Digest, "admin")
	if err != nil || again.Status == metadata.StatusSucceeded {
		t.Fatalf("start on an unsigned artifact: %v, %s (want a new conversion)", err, again.Status)
	}
	e.wait("signed", again.ID)
	after := e.streamingReferrers("signed", img.Digest)
	if sigs := e.signatures("signed", img.Digest); len(after) != 1 || after[0].Digest != refs[0].Digest || len(sigs) != 1 || !sigs[refs[0].Digest] {
		t.Fatalf("after converting again: artifacts %v, signed %v", after, sigs)
	}

	// Deleting the image takes the signature with the artifact.
	if err := e.reg.DeleteManifest(ctx, "signed", oci.Reference{Digest: img.Digest.String()}); err != nil {
		t.Fatal(err)
	}
	left, _ := e.reg.Referrers(ctx, "signed", img.Digest, "")
	if len(left) != 0 {
		t.Fatalf("referrers left after deleting the image: %v", left)
	}
}

// Deleting an image stops its conversion running in this process at once,
// not at the worker's next heartbeat.
func TestDeleteStopsTheRunningConversion(t *testing.T) {
	e := &env{t: t, dir: t.TempDir(), tweak: func(o *Options) { o.Heartbeat, o.Lease = time.Minute, 5*time.Minute }}
	e.open(true)
	t.Cleanup(e.close)
	ctx := context.Background()
	e.conv.sourceHook = func(r io.Reader) io.Reader { return &slowReader{r: r, delay: 2 * time.Millisecond} }
	// 40 MiB read 32 KiB per 2 ms: the conversion alone takes seconds.
	img := e.pushImage("gone", "v1", "linux", "amd64", makeLayer(t, 31, 40, 1<<20))
	op, err := e.conv.Start(ctx, "gone", img.Digest, "admin")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		e.conv.mu.Lock()
		running := e.conv.running[op.ID] != nil
		e.conv.mu.Unlock()
		if running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the conversion did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := e.reg.DeleteManifest(ctx, "gone", oci.Reference{Digest: img.Digest.String()}); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(t, time.Second, "the conversion of a deleted image still runs a second later (its heartbeat is a minute away)")
	if got, _ := e.conv.Get(ctx, "gone", op.ID); got.Status != metadata.StatusCanceled {
		t.Fatalf("operation of the deleted image: %s", got.Status)
	}
}

// A conversion that finds its image deleted before the delete canceled
// it (the delete's cancel comes after the manifest is gone) ends Canceled,
// as the delete would have made it, not Failed.
func TestConversionOfAnImageDeletedUnderItEndsCanceled(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	img := e.pushImage("gone", "v1", "linux", "amd64", makeLayer(t, 32, 2, 1024))
	op, err := e.conv.Start(ctx, "gone", img.Digest, "admin")
	if err != nil {
		t.Fatal(err)
	}
	// Delete as if the delete's cancel were still on its way: without
	// the hook, the queued operation stays NotStarted.
	e.reg.SetStreamingHooks(nil)
	if err := e.reg.DeleteManifest(ctx, "gone", oci.Reference{Digest: img.Digest.String()}); err != nil {
		t.Fatal(err)
	}
	e.reg.SetStreamingHooks(e.conv)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { e.conv.Run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()
	got := e.wait("gone", op.ID)
	if got.Status != metadata.StatusCanceled || got.Details != metadata.DetailsImageDeleted || got.ErrorCode != "" {
		t.Fatalf("operation of an image deleted under it: %s, %q, code %q", got.Status, got.Details, got.ErrorCode)
	}
	if refs := e.streamingReferrers("gone", img.Digest); len(refs) != 0 {
		t.Fatalf("a canceled conversion left %d streaming artifacts", len(refs))
	}
}

// waitIdle waits until no conversion runs on this service, failing with
// msg after timeout.
func (e *env) waitIdle(t *testing.T, timeout time.Duration, msg string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		e.conv.mu.Lock()
		n := len(e.conv.running)
		e.conv.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
