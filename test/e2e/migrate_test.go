package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/testbackend"
)

// TestMigrateToSharedBackends moves a registry that ran on its embedded
// stores to PostgreSQL and S3 with `sluiced migrate`, twice (the second
// run finds everything there and copies nothing), and serves what was
// pushed before from the new stores.
func TestMigrateToSharedBackends(t *testing.T) {
	oldData, newData := t.TempDir(), t.TempDir()
	old := startSluiced(t, oldData)
	oc := newOCIClient(t, old.addr)
	rng := newRand(t)
	images := []*testImage{newTestImage(t, rng, 1<<10, 300<<10), newTestImage(t, rng, 2<<10, 64<<10, 1<<20)}
	for i, img := range images {
		oc.pushImage(t, "e2e/migrate", []string{"v1", "v2"}[i], img)
	}
	if err := old.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	dsn, bucket := testbackend.Postgres(t), testbackend.S3(t)
	dir := t.TempDir()
	oldConfig, newConfig := filepath.Join(dir, "old.yaml"), filepath.Join(dir, "new.yaml")
	writeFile(t, oldConfig, []byte("data: "+oldData+"\n"))
	// The password-free DSN stands in for one with a password: it comes
	// from the environment, as the documentation advises.
	writeFile(t, newConfig, []byte("data: "+newData+"\ndatabase:\n  driver: postgres\nstorage:\n  url: "+bucket+"\n"))
	migrate := func() string {
		t.Helper()
		cmd := exec.Command(sluicedBin, "migrate", "--from-config", oldConfig, "--to-config", newConfig)
		cmd.Env = append(os.Environ(), "SLUICE_DATABASE_DSN="+dsn, "SLUICE_DATABASE_DRIVER=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sluiced migrate: %v\n%s", err, out)
		}
		return string(out)
	}
	blobs := len(images[0].Blobs) + len(images[1].Blobs)
	if out := migrate(); !strings.Contains(out, "migrated: "+strconv.Itoa(blobs)+" blobs copied") {
		t.Fatalf("first migration, want %d blobs copied:\n%s", blobs, out)
	}
	if out := migrate(); !strings.Contains(out, "migrated: 0 blobs copied (0 bytes), "+strconv.Itoa(blobs)+" already there") {
		t.Fatalf("second migration copied again:\n%s", out)
	}

	moved := startSluiced(t, newData, sharedBackend(dsn, bucket)...)
	oc = newOCIClient(t, moved.addr)
	ctx := context.Background()
	for i, img := range images {
		tag := []string{"v1", "v2"}[i]
		h, body, err := oc.getManifest(ctx, "e2e/migrate", tag, ocispec.MediaTypeImageManifest)
		if err != nil || !bytes.Equal(body, img.Manifest) || h.Get("Docker-Content-Digest") != img.ManifestDigest.String() {
			t.Fatalf("%s after the migration: %v\n%s", tag, err, body)
		}
		for d, want := range img.Blobs {
			got, err := oc.getBlob(ctx, "e2e/migrate", d)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("blob %s after the migration: %v", d, err)
			}
		}
	}
	// New pushes go on from the copied state.
	oc.pushImage(t, "e2e/migrate2", "v1", newTestImage(t, rng, 512, 4<<10))
}
