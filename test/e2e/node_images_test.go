//go:build linux

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// nodeImage is a runnable image for the node tests: static busybox in its
// first layer, /etc files in its second, then data layers, every layer
// marked with the image's name so that no two images share one (a shared
// layer would already be unpacked when the second image is pulled).
type nodeImage struct {
	*testImage
	name string
	repo string
	// sums maps each data file (absolute path in the image) to its sha256;
	// /data/sums.txt lists them as sha256sum -c reads them.
	sums map[string]string
	// data holds the content of the data files, by path.
	data map[string][]byte
}

// ref is the image's reference by tag in the registry at addr.
func (img *nodeImage) ref(addr string) string { return addr + "/" + img.repo + ":v1" }

// newNodeImage makes an image named name for repo whose data layers hold
// files (path without the leading slash -> content), one layer per map.
func newNodeImage(t *testing.T, name, repo string, cfg ocispec.ImageConfig, dataLayers ...map[string][]byte) *nodeImage {
	t.Helper()
	busybox := readStaticBusybox(t)
	img := &nodeImage{name: name, repo: repo, sums: map[string]string{}, data: map[string][]byte{}}
	mark := []byte(name + "\n")
	layers := [][]byte{
		tarLayer(t, dirEntry("bin"), fileEntry("bin/busybox", 0o755, busybox), symlinkEntry("bin/sh", "busybox"),
			fileEntry("bin/.image", 0o644, mark)),
		tarLayer(t, dirEntry("etc"), fileEntry("etc/passwd", 0o644, []byte("root:x:0:0:root:/:/bin/sh\n")),
			fileEntry("etc/group", 0o644, []byte("root:x:0:\n")), fileEntry("etc/streamed.txt", 0o644, []byte(streamedText)),
			fileEntry("etc/image", 0o644, mark)),
	}
	var sums strings.Builder
	for i, files := range dataLayers {
		entries := []tarEntry{dirEntry("data")}
		dirs := map[string]bool{"data": true}
		for _, p := range slices.Sorted(maps.Keys(files)) {
			if d := filepath.Dir(p); !dirs[d] {
				dirs[d] = true
				entries = append(entries, dirEntry(d))
			}
			entries = append(entries, fileEntry(p, 0o644, files[p]))
			sum := sha256.Sum256(files[p])
			img.sums["/"+p] = hex.EncodeToString(sum[:])
			img.data["/"+p] = files[p]
			fmt.Fprintf(&sums, "%s  /%s\n", img.sums["/"+p], p)
		}
		entries = append(entries, fileEntry(fmt.Sprintf("data/.layer%d", i), 0o644, mark))
		if i == len(dataLayers)-1 {
			entries = append(entries, fileEntry("data/sums.txt", 0o644, []byte(sums.String())))
		}
		layers = append(layers, tarLayer(t, entries...))
	}
	if cfg.Entrypoint == nil {
		cfg.Entrypoint = []string{"/bin/busybox"}
	}
	cfg.Env, cfg.WorkingDir = []string{"PATH=/bin"}, "/"
	img.testImage = newImage(t, ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}, cfg, gzipLevel(1), layers...)
	return img
}

// dataFiles makes n files of size bytes each, compressible as real files
// are, named dir/<prefix><i>.
func dataFiles(rng *rand.Rand, dir, prefix string, n, size int) map[string][]byte {
	files := map[string][]byte{}
	for i := range n {
		files[fmt.Sprintf("%s/%s%03d", dir, prefix, i)] = compressibleBytes(rng, size)
	}
	return files
}
