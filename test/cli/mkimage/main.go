// Command mkimage writes the OCI image layouts that the setup guide test
// pushes with skopeo: "small", the guide's image in miniature (a base and
// an application layer), and "large", 256 MiB of small text-like files
// whose conversion takes a few seconds, long enough to show and cancel it
// while it runs; and "app", the small image with its tag written into its
// application layer, so that each tag is another image. It is a program of
// its own so that the test, even built with the race detector, makes the
// large image quickly.
//
//	mkimage DIR small|large|app TAG
package main

import (
	"archive/tar"
	"bytes"
	_ "crypto/sha256" // digest.FromBytes needs it registered
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func main() {
	if len(os.Args) != 4 || (os.Args[2] != "small" && os.Args[2] != "large" && os.Args[2] != "app") {
		fmt.Fprintln(os.Stderr, "usage: mkimage DIR small|large|app TAG")
		os.Exit(2)
	}
	layers := smallLayers()
	switch os.Args[2] {
	case "large":
		layers = largeLayers()
	case "app":
		layers[1] = tarOf(map[string]string{"home/jovyan/notebook.ipynb": `{"cells":[],"tag":"` + os.Args[3] + `"}`})
	}
	if err := writeLayout(os.Args[1], os.Args[3], layers); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func smallLayers() [][]byte {
	return [][]byte{
		tarOf(map[string]string{"etc/os-release": "ID=debian\n", "bin/sh": strings.Repeat("\x7fELF", 4096)}),
		tarOf(map[string]string{"home/jovyan/notebook.ipynb": `{"cells":[]}`}),
	}
}

func largeLayers() [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"spark", "notebook", "kernel", "python", "jupyter", "cluster", "dataframe", "executor", "shuffle", "partition"}
	files := map[string]string{}
	var content strings.Builder
	for i := 0; i < 4096; i++ {
		content.Reset()
		for content.Len() < 64<<10 {
			content.WriteString(words[rng.IntN(len(words))])
			fmt.Fprintf(&content, " %08x\n", rng.Uint32())
		}
		files[fmt.Sprintf("opt/data/%04d/part-%04d.txt", i/64, i)] = content.String()
	}
	return [][]byte{tarOf(files)}
}

// tarOf is a deterministic tar of files.
func tarOf(files map[string]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(files[n]))})
		_, _ = tw.Write([]byte(files[n]))
	}
	_ = tw.Close()
	return buf.Bytes()
}

// writeLayout writes an OCI layout with one linux/amd64 image of gzip
// layers, tagged tag.
func writeLayout(dir, tag string, layers [][]byte) error {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return err
	}
	writeBlob := func(mediaType string, b []byte) (ocispec.Descriptor, error) {
		d := digest.FromBytes(b)
		return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))},
			os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()), b, 0o644)
	}
	writeJSON := func(mediaType string, v any) (ocispec.Descriptor, error) {
		b, err := json.Marshal(v)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		return writeBlob(mediaType, b)
	}
	img := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, RootFS: ocispec.RootFS{Type: "layers"}}
	var descs []ocispec.Descriptor
	for _, raw := range layers {
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
		_, _ = zw.Write(raw)
		if err := zw.Close(); err != nil {
			return err
		}
		d, err := writeBlob(ocispec.MediaTypeImageLayerGzip, gz.Bytes())
		if err != nil {
			return err
		}
		descs = append(descs, d)
		img.RootFS.DiffIDs = append(img.RootFS.DiffIDs, digest.FromBytes(raw))
	}
	cfg, err := writeJSON(ocispec.MediaTypeImageConfig, img)
	if err != nil {
		return err
	}
	m, err := writeJSON(ocispec.MediaTypeImageManifest, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: descs})
	if err != nil {
		return err
	}
	m.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	index := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{m}}
	b, err := json.Marshal(index)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageIndexFile), b, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}
