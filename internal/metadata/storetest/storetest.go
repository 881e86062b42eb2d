// Package storetest is the behaviour suite of the metadata store: what any
// backend must do for the registry, the conversion service and the auth
// service, whose interfaces it joins. A backend's test runs it in one line:
//
//	storetest.Run(t, func(t *testing.T, now func() time.Time) storetest.Store { ... })
//
// Each case opens an empty store whose clock the suite sets, so that ages,
// leases and cutoffs are exact. The cases cover every operation, its
// error sentinels, ordering and pagination, soft delete and restore, usage
// accounting, garbage collection marking and the races that matter (two
// writers of one tag, a delete racing a push, two workers claiming one
// operation, a collection racing a link).
package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/conversion"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/registry"
	"github.com/sluicehq/sluice/internal/testclock"
)

// Store is a metadata store backend: everything its consumers ask of it.
type Store interface {
	registry.Store
	conversion.Store
	auth.IdentityStore
	auth.KeyStore
}

// Open opens an empty store whose clock is now. The suite closes nothing:
// the backend's test cleans up with t.Cleanup.
type Open func(t *testing.T, now func() time.Time) Store

// Run runs the suite against the stores open makes, one per case.
func Run(t *testing.T, open Open) {
	groups := []struct {
		name  string
		cases []testCase
	}{
		{"Repositories", repositoryCases},
		{"Blobs", blobCases},
		{"Manifests", manifestCases},
		{"Listings", listingCases},
		{"Deletes", deleteCases},
		{"Uploads", uploadCases},
		{"Profiles", profileCases},
		{"GC", gcCases},
		{"Operations", operationCases},
		{"Identities", identityCases},
		{"SigningKeys", keyCases},
		{"Summaries", summaryCases},
		{"Races", raceCases},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, c := range g.cases {
				t.Run(c.name, func(t *testing.T) {
					clock := testclock.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
					c.run(&harness{t: t, ctx: context.Background(), s: open(t, clock.Now), clock: clock})
				})
			}
		})
	}
}

type testCase struct {
	name string
	run  func(h *harness)
}

// harness is one case's store, clock and helpers.
type harness struct {
	t     *testing.T
	ctx   context.Context
	s     Store
	clock *testclock.Clock
}

// ok fails the case on an error.
func (h *harness) ok(err error) {
	h.t.Helper()
	if err != nil {
		h.t.Fatal(err)
	}
}

// is fails the case unless err is target.
func (h *harness) is(err, target error, what string) {
	h.t.Helper()
	if !errors.Is(err, target) {
		h.t.Fatalf("%s: %v, want %v", what, err, target)
	}
}

// blob stores content as a blob linked in repo, as a push does.
func (h *harness) blob(repo, content string) metadata.BlobRef {
	h.t.Helper()
	d := digest.FromString(content).String()
	_, err := h.s.TouchBlob(h.ctx, d)
	h.ok(err)
	h.ok(h.s.LinkBlob(h.ctx, repo, d, int64(len(content))))
	return metadata.BlobRef{Digest: d, Size: int64(len(content))}
}

// image is a manifest of repo referencing blobs; note makes it unique.
func image(repo, note string, blobs ...metadata.BlobRef) *metadata.Manifest {
	payload := fmt.Sprintf(`{"schemaVersion":2,"note":%q,"blobs":%d}`, note, len(blobs))
	return &metadata.Manifest{
		Repository:      repo,
		Digest:          digest.FromString(payload).String(),
		MediaType:       "application/vnd.oci.image.manifest.v1+json",
		ArtifactType:    "application/vnd.oci.image.config.v1+json",
		ConfigMediaType: "application/vnd.oci.image.config.v1+json",
		Payload:         []byte(payload),
		Size:            int64(len(payload)),
		Blobs:           blobs,
	}
}

// referrer is a manifest of repo whose subject is subject.
func referrer(repo, note, artifactType, subject string) *metadata.Manifest {
	m := image(repo, note)
	m.ArtifactType, m.ConfigMediaType, m.Subject = artifactType, "", subject
	return m
}

// push stores m under tags.
func (h *harness) push(m *metadata.Manifest, tags ...string) *metadata.Manifest {
	h.t.Helper()
	h.ok(h.s.PutManifest(h.ctx, m, tags, nil))
	return m
}

// pushImage stores a one-layer image in repo under tags.
func (h *harness) pushImage(repo, note string, tags ...string) *metadata.Manifest {
	h.t.Helper()
	return h.push(image(repo, note, h.blob(repo, "layer of "+note)), tags...)
}

// digestOf is the digest of content, as the store keeps it.
func digestOf(content string) string { return digest.FromString(content).String() }

func boolPtr(b bool) *bool { return &b }
