package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ackedPush is an image whose manifest PUT the registry answered with 201.
type ackedPush struct {
	repo, tag string
	manifest  []byte
	digest    digest.Digest
	blobs     map[digest.Digest][]byte
}

// ackedBlob is a blob whose upload the registry answered with 201.
type ackedBlob struct {
	repo string
	data []byte
}

// openUpload is an upload session that had not been answered with 201.
type openUpload struct {
	repo string
	loc  string
	blob []byte
	// acked is how many bytes the registry acknowledged with 202.
	acked int64
	// inFlight is the length of the request body sent but not answered.
	inFlight int64
	// finishing says the closing PUT was sent.
	finishing bool
}

// pusher pushes distinct images in a loop, one request at a time, noting
// what the registry acknowledged. Its fields are read only after run ends.
type pusher struct {
	oc   *ociClient
	rng  *rand.Rand
	repo string
	name string
	// chunks is how many pieces a blob is sent in: 1 is a monolithic
	// POST + PUT, more are PATCHes and a closing PUT.
	chunks int
	// lastChunkInPut sends the final piece in the closing PUT rather than
	// in a PATCH followed by an empty PUT.
	lastChunkInPut bool

	pushes []ackedPush
	blobs  map[digest.Digest]ackedBlob
	open   *openUpload
	// err is a failure no crash explains: an unexpected answer, or a
	// transport error before the kill.
	err error
}

// run pushes until ctx ends or a request fails; killed says whether the
// registry has been killed, which explains transport errors.
func (p *pusher) run(ctx context.Context, killed *atomic.Bool, acked *atomic.Int64) {
	p.blobs = map[digest.Digest]ackedBlob{}
	for i := 0; ctx.Err() == nil; i++ {
		err := p.pushImage(ctx, fmt.Sprintf("%s-%04d", p.name, i))
		if err == nil {
			acked.Add(1)
			continue
		}
		var se *statusError
		if errors.As(err, &se) || !killed.Load() {
			p.err = err
		}
		return
	}
}

// pushImage pushes a config and one or two layers of random content, then
// the manifest by tag.
func (p *pusher) pushImage(ctx context.Context, tag string) error {
	config, _ := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		Config:   ocispec.ImageConfig{Labels: map[string]string{"e2e.push": p.repo + ":" + tag, "e2e.nonce": fmt.Sprint(p.rng.Uint64())}},
		RootFS:   ocispec.RootFS{Type: "layers"},
	})
	blobs := map[digest.Digest][]byte{}
	configDesc, err := p.pushBlob(ctx, ocispec.MediaTypeImageConfig, config, blobs)
	if err != nil {
		return err
	}
	var layers []ocispec.Descriptor
	for range 1 + p.rng.IntN(2) {
		layer := randomBytes(p.rng, 1<<10+p.rng.IntN(160<<10))
		d, err := p.pushBlob(ctx, ocispec.MediaTypeImageLayerGzip, layer, blobs)
		if err != nil {
			return err
		}
		layers = append(layers, d)
	}
	manifest, _ := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    layers,
	})
	if err := p.oc.putManifest(ctx, p.repo, tag, ocispec.MediaTypeImageManifest, manifest); err != nil {
		return err
	}
	p.pushes = append(p.pushes, ackedPush{repo: p.repo, tag: tag, manifest: manifest, digest: digest.FromBytes(manifest), blobs: blobs})
	return nil
}

// pushBlob uploads b, keeping p.open current after every answer.
func (p *pusher) pushBlob(ctx context.Context, mediaType string, b []byte, blobs map[digest.Digest][]byte) (ocispec.Descriptor, error) {
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	loc, err := p.oc.startUpload(ctx, p.repo)
	if err != nil {
		return desc, err
	}
	u := &openUpload{repo: p.repo, loc: loc, blob: b}
	p.open = u
	parts := splitChunks(b, p.chunks)
	var last []byte
	if p.chunks == 1 || p.lastChunkInPut {
		parts, last = parts[:len(parts)-1], parts[len(parts)-1]
	}
	for _, part := range parts {
		u.inFlight = int64(len(part))
		next, err := p.oc.patchChunk(ctx, u.loc, u.acked, part)
		if err != nil {
			return desc, err
		}
		u.loc, u.acked, u.inFlight = next, u.acked+u.inFlight, 0
	}
	u.finishing, u.inFlight = true, int64(len(last))
	if err := p.oc.finishUpload(ctx, u.loc, desc.Digest, last); err != nil {
		return desc, err
	}
	p.open = nil
	p.blobs[desc.Digest] = ackedBlob{repo: p.repo, data: b}
	blobs[desc.Digest] = b
	return desc, nil
}
