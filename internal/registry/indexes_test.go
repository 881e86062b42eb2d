package registry

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/oci"
)

// TestIndexesOf: the indexes listing a platform manifest are found, others
// and plain manifests are not, and a deleted index no longer counts.
func TestIndexesOf(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	const repo = "team/multi"
	pushImage := func(layer string) digest.Digest {
		cfg, l := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`), []byte(layer)
		c, ld := put(t, e.reg, repo, cfg), put(t, e.reg, repo, l)
		res, err := e.reg.PutManifest(ctx, repo, oci.Reference{Tag: "img-" + layer}, oci.MediaTypeImageManifest, imageManifest(c, ld, len(cfg), len(l)), nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Digest
	}
	amd, arm, alone := pushImage("amd64"), pushImage("arm64"), pushImage("alone")
	pushIndex := func(tag string, children ...digest.Digest) digest.Digest {
		body := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`
		for i, c := range children {
			if i > 0 {
				body += ","
			}
			body += fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d,"platform":{"os":"linux","architecture":"arch%d"}}`, c, i+300, i)
		}
		res, err := e.reg.PutManifest(ctx, repo, oci.Reference{Tag: tag}, oci.MediaTypeImageIndex, []byte(body+`]}`), nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Digest
	}
	both := pushIndex("both", amd, arm)
	onlyArm := pushIndex("arm", arm)

	for _, tc := range []struct {
		name  string
		child digest.Digest
		want  []digest.Digest
	}{
		{"listed by one", amd, []digest.Digest{both}},
		{"listed by two", arm, sorted(both, onlyArm)},
		{"listed by none", alone, nil},
		{"an index itself", both, nil},
	} {
		got, err := e.reg.IndexesOf(ctx, repo, tc.child)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%s: IndexesOf = %v, want %v", tc.name, got, tc.want)
		}
	}
	if err := e.reg.DeleteManifest(ctx, repo, oci.Reference{Digest: both.String()}); err != nil {
		t.Fatal(err)
	}
	if got, err := e.reg.IndexesOf(ctx, repo, amd); err != nil || len(got) != 0 {
		t.Errorf("after the index is deleted: IndexesOf = %v, %v; want none", got, err)
	}
	if _, err := e.reg.IndexesOf(ctx, "team/none", amd); err == nil {
		t.Error("IndexesOf in a repository that does not exist: no error")
	}
}

func sorted(ds ...digest.Digest) []digest.Digest {
	slices.Sort(ds)
	return ds
}
