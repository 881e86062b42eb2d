package auth

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sluicehq/sluice/internal/metadata"
)

// Replicas on several machines share their keys through the database: the
// first takes those the data directory had (its current one current), the
// next finds them there, and a rotation on one is verified by the other.
func TestSharedKeyRing(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "keys")
	local, err := OpenKeyRing(dir)
	if err != nil {
		t.Fatal(err)
	}
	current, err := local.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	meta, err := metadata.OpenSQLite(ctx, filepath.Join(t.TempDir(), "sluice.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()

	a, err := OpenSharedKeyRing(ctx, meta, dir)
	if err != nil {
		t.Fatal(err)
	}
	if kid, _ := a.signing(); kid != current || !slices.Equal(a.IDs(), local.IDs()) {
		t.Fatalf("imported keys %v with %s current, want %v with %s", a.IDs(), kid, local.IDs(), current)
	}
	jwks, err := a.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	endorsed := 0
	for _, k := range jwks.Keys {
		if k.Endorsement != "" {
			endorsed++
		}
	}
	if endorsed != 1 {
		t.Errorf("%d of the imported keys carry an endorsement, want the rotated one's", endorsed)
	}

	b, err := OpenSharedKeyRing(ctx, meta, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if kid, _ := b.signing(); kid != current || !slices.Equal(b.IDs(), a.IDs()) {
		t.Fatalf("second replica has %v with %s current, want the first's", b.IDs(), kid)
	}
	rotated, err := a.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.verifying(rotated); err != nil {
		t.Fatalf("a key rotated on one replica is unknown to the other: %v", err)
	}
	c, err := OpenSharedKeyRing(ctx, meta, "")
	if err != nil {
		t.Fatal(err)
	}
	if kid, _ := c.signing(); kid != rotated {
		t.Errorf("a replica starting after the rotation signs with %s, want %s", kid, rotated)
	}
}
