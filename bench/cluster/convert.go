package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"
)

// image is a small Linux image: its config and gzip layers.
type image struct {
	config []byte
	layers [][]byte
}

// makeImage builds an image of `layers` layers, each a tar of files
// holding layerSize bytes in all, half random and half text, so that gzip
// and zstd both have something to do. seed makes every image different,
// so that no layer is converted once for two images.
func makeImage(seed uint64, layers, layerSize int) (image, error) {
	rng := rand.New(rand.NewPCG(seed, 42))
	var img image
	var diffIDs []digest.Digest
	for l := range layers {
		var tarBuf bytes.Buffer
		tw := tar.NewWriter(&tarBuf)
		const fileSize = 64 << 10
		for f := 0; f*fileSize < layerSize; f++ {
			data := make([]byte, fileSize)
			for i := 0; i < fileSize/2; i++ {
				data[i] = byte(rng.Uint32())
			}
			for i := fileSize / 2; i < fileSize; i++ {
				data[i] = "the quick brown fox jumps over the lazy dog\n"[i%44]
			}
			hdr := &tar.Header{Name: fmt.Sprintf("layer%d/file%04d", l, f), Mode: 0o644, Size: fileSize, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
			if err := tw.WriteHeader(hdr); err != nil {
				return img, err
			}
			if _, err := tw.Write(data); err != nil {
				return img, err
			}
		}
		if err := tw.Close(); err != nil {
			return img, err
		}
		diffIDs = append(diffIDs, digest.FromBytes(tarBuf.Bytes()))
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		if _, err := zw.Write(tarBuf.Bytes()); err != nil {
			return img, err
		}
		if err := zw.Close(); err != nil {
			return img, err
		}
		img.layers = append(img.layers, gz.Bytes())
	}
	cfg := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Cmd": []string{"/bin/sh"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	var err error
	img.config, err = json.Marshal(cfg)
	return img, err
}

// convertAll starts a conversion of each tag of repo at once and waits
// until all have succeeded; it returns the time from the first request to
// the last success.
func (c *client) convertAll(ctx context.Context, repo string, tags []string) (time.Duration, error) {
	start := time.Now()
	var ops []string
	for _, tag := range tags {
		_, b, err := c.do(ctx, "POST", "/acr/v1/"+repo+"/_streaming/"+tag, nil, nil, http.StatusAccepted)
		if err != nil {
			return 0, err
		}
		var op struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(b, &op); err != nil || op.ID == "" {
			return 0, fmt.Errorf("conversion of %s:%s: no operation in %.200s", repo, tag, b)
		}
		ops = append(ops, op.ID)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for len(ops) > 0 {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d conversions not done after 10 minutes", len(ops))
		}
		var left []string
		for _, id := range ops {
			_, b, err := c.do(ctx, "GET", "/acr/v1/"+repo+"/_operations/"+id, nil, nil, http.StatusOK)
			if err != nil {
				return 0, err
			}
			var op struct {
				Status string `json:"status"`
			}
			if err := json.Unmarshal(b, &op); err != nil {
				return 0, err
			}
			switch op.Status {
			case "Succeeded":
			case "NotStarted", "Running":
				left = append(left, id)
			default:
				return 0, fmt.Errorf("conversion %s ended %s: %.300s", id, op.Status, b)
			}
		}
		ops = left
		if len(ops) > 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	return time.Since(start), nil
}
