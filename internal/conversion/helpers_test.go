package conversion

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/blobstore"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
	"github.com/sluicehq/sluice/internal/streaming"
)

type env struct {
	t     *testing.T
	dir   string
	meta  *metadata.Store
	blobs *blobstore.Store
	reg   *registry.Registry
	conv  *Service
	keys  *auth.KeyRing
	stop  func()
	// tweak, when set, changes the service's options.
	tweak func(*Options)
	// logs, when set, receives the services' logs.
	logs io.Writer
}

// newEnv builds a registry and a conversion service over temporary stores;
// with workers set, workers run until the test ends.
func newEnv(t *testing.T, workers bool) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.open(workers)
	t.Cleanup(e.close)
	return e
}

func (e *env) open(workers bool) {
	var err error
	e.meta, err = metadata.OpenSQLite(context.Background(), filepath.Join(e.dir, "sluice.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.blobs, err = blobstore.OpenDir(filepath.Join(e.dir, "blobs"))
	if err != nil {
		e.t.Fatal(err)
	}
	logs := e.logs
	if logs == nil {
		logs = io.Discard
	}
	log := slog.New(slog.NewTextHandler(logs, nil))
	e.reg = registry.New(e.meta, e.blobs, registry.DefaultOptions(), log)
	e.keys, err = auth.OpenKeyRing(filepath.Join(e.dir, "keys"))
	if err != nil {
		e.t.Fatal(err)
	}
	opts := Options{Workers: 1, Lease: 2 * time.Second, Heartbeat: 50 * time.Millisecond, Poll: 50 * time.Millisecond, Signer: e.keys}
	if e.tweak != nil {
		e.tweak(&opts)
	}
	e.conv = New(e.reg, e.meta, opts, log)
	e.stop = func() {}
	if workers {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			e.conv.Run(ctx)
			close(done)
		}()
		e.stop = func() {
			cancel()
			<-done
		}
	}
}

func (e *env) close() {
	if e.meta == nil {
		return
	}
	e.stop()
	e.meta.Close()
	e.blobs.Close()
	e.meta = nil
}

// layer is a generated image layer.
type layer struct {
	blob   []byte
	diffID digest.Digest
}

// makeLayer builds a tar+gzip layer of files with random contents.
func makeLayer(t *testing.T, seed uint64, files int, fileSize int) layer {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range files {
		data := make([]byte, fileSize)
		for j := range data {
			data[j] = byte(rng.IntN(16)) // compressible, like real files
		}
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("dir%d/file%d", seed, i), Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	return layer{blob: gz.Bytes(), diffID: digest.FromBytes(tarBuf.Bytes())}
}

func (e *env) putBlob(repo string, b []byte) ocispec.Descriptor {
	e.t.Helper()
	d := digest.FromBytes(b)
	if _, err := e.reg.PutBlob(context.Background(), repo, d, bytes.NewReader(b)); err != nil {
		e.t.Fatal(err)
	}
	return ocispec.Descriptor{Digest: d, Size: int64(len(b))}
}

func (e *env) putManifest(repo, tag string, mediaType string, v any) ocispec.Descriptor {
	e.t.Helper()
	payload, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	ref := oci.Reference{Tag: tag}
	if tag == "" {
		ref = oci.Reference{Digest: digest.FromBytes(payload).String()}
	}
	res, err := e.reg.PutManifest(context.Background(), repo, ref, mediaType, payload, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: res.Digest, Size: int64(len(payload))}
}

// pushImage pushes an image of the given layers and platform.
func (e *env) pushImage(repo, tag, os, arch string, layers ...layer) ocispec.Descriptor {
	e.t.Helper()
	return e.pushImageConfig(repo, tag, ocispec.Image{Platform: ocispec.Platform{OS: os, Architecture: arch}}, layers...)
}

// pushImageConfig pushes an image of the given layers with config cfg
// (its rootfs set from the layers).
func (e *env) pushImageConfig(repo, tag string, cfg ocispec.Image, layers ...layer) ocispec.Descriptor {
	e.t.Helper()
	cfg.RootFS = ocispec.RootFS{Type: "layers"}
	var descs []ocispec.Descriptor
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.diffID)
		d := e.putBlob(repo, l.blob)
		d.MediaType = ocispec.MediaTypeImageLayerGzip
		descs = append(descs, d)
	}
	cfgBytes, _ := json.Marshal(cfg)
	cd := e.putBlob(repo, cfgBytes)
	cd.MediaType = ocispec.MediaTypeImageConfig
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: descs}
	return e.putManifest(repo, tag, ocispec.MediaTypeImageManifest, m)
}

// wait polls an operation until it leaves NotStarted and Running.
func (e *env) wait(repo, id string) *metadata.Operation {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		op, err := e.conv.Get(context.Background(), repo, id)
		if err != nil {
			e.t.Fatal(err)
		}
		if !op.Active() {
			return op
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("operation %s did not finish", id)
	return nil
}

// streamingReferrers lists the streaming artifacts of an image.
func (e *env) streamingReferrers(repo string, d digest.Digest) []ocispec.Descriptor {
	e.t.Helper()
	refs, err := e.reg.Referrers(context.Background(), repo, d, streaming.ArtifactType)
	if err != nil {
		e.t.Fatal(err)
	}
	return refs
}
