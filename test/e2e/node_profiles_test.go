//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The snapshotter's startup profile metrics.
const (
	metricProfilesRecorded   = `sluice_snapshotter_startup_profiles_total{event="recorded"}`
	metricProfilesPrefetched = `sluice_snapshotter_startup_profiles_total{event="prefetched"}`
	metricProfilesFailed     = `sluice_snapshotter_startup_profiles_total{event="failed"}`
	metricOnDemandBytes      = `sluice_snapshotter_fetched_bytes_total{kind="on_demand"}`
	metricPrefetchBytes      = `sluice_snapshotter_fetched_bytes_total{kind="prefetch"}`
)

// startupProfile is a layer's startup profile as the management API shows
// it.
type startupProfile struct {
	Digest    string     `json:"digest"`
	Ranges    [][2]int64 `json:"ranges"`
	UpdatedAt string     `json:"updatedAt"`
}

// bytes is how many bytes of the layer the profile covers.
func (p startupProfile) bytes() int64 {
	var n int64
	for _, r := range p.Ranges {
		n += r[1]
	}
	return n
}

func profilePath(repo string, layer digest.Digest) string {
	return "/acr/v1/" + repo + "/_profiles/" + layer.String()
}

// startupProfile reads the profile of a streamed layer in repo; false when
// the registry has none (404 PROFILE_UNKNOWN).
func (c *ociClient) startupProfile(t *testing.T, repo string, layer digest.Digest) (startupProfile, bool) {
	t.Helper()
	_, b, err := c.do(context.Background(), http.MethodGet, profilePath(repo, layer), nil, nil, http.StatusOK)
	var se *statusError
	if errors.As(err, &se) && se.Got == http.StatusNotFound && strings.Contains(se.Body, "PROFILE_UNKNOWN") {
		return startupProfile{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var p startupProfile
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("the startup profile of %s is not the JSON expected: %v\n%s", layer, err, b)
	}
	return p, true
}

// putStartupProfile gives the registry a profile of a streamed layer.
func (c *ociClient) putStartupProfile(t *testing.T, repo string, layer digest.Digest, ranges [][2]int64) {
	t.Helper()
	if _, err := c.mgmt(context.Background(), http.MethodPut, profilePath(repo, layer), map[string]any{"ranges": ranges}, http.StatusNoContent, nil); err != nil {
		t.Fatal(err)
	}
}

// profileNodes starts the profiled image on nodes of their own, each with
// an empty chunk cache, and reads the registry's profiles of its layers.
type profileNodes struct {
	flavor containerdFlavor
	reg    *sluiced
	admin  *ociClient
	// node is a client with the nodes' pull-only token.
	node  *ociClient
	creds snapshotterOptions
	img   *nodeImage
	// twins maps each layer of img to its streamed twin; data is the
	// twin of the data layer.
	twins map[digest.Digest]ocispec.Descriptor
	data  ocispec.Descriptor
}

// profileRun is what a start of the profiled image cost a node.
type profileRun struct {
	// onDemand is the node's on-demand fetched bytes.
	onDemand float64
	// profile is the registry's profile of the data layer after the start.
	profile startupProfile
}

// The files a start reads: three of the eight, less than a profile may
// hold, or seven, more.
var (
	profiledShortStart = []string{"/data/start/f000", "/data/start/f003", "/data/start/f005"}
	profiledLongStart  = []string{"/data/start/f000", "/data/start/f001", "/data/start/f002", "/data/start/f003",
		"/data/start/f004", "/data/start/f005", "/data/start/f006"}
)

// testStartupProfiles starts the profiled image on fresh nodes one after
// the other: the first records which chunks its container read and gives
// the registry that startup profile, a later node prefetches it and gives
// none, a profile naming no chunk is ignored (and replaced), a start that
// read more than a profile holds gives it once, a node with profiles off
// neither asks nor gives, and only those who may pull read and give
// profiles.
func testStartupProfiles(t *testing.T, f containerdFlavor, reg *sluiced, admin *ociClient, creds snapshotterOptions, img *nodeImage) {
	pn := &profileNodes{flavor: f, reg: reg, admin: admin, node: admin.as(creds.user, creds.password), creds: creds, img: img,
		twins: streamedLayers(t, admin, img)}
	pn.data = pn.twins[img.Layers[len(img.Layers)-1].Digest]
	var first profileRun
	if t.Run("first start records", func(t *testing.T) { first = pn.testFirstStart(t) }) {
		t.Run("a later node prefetches it", func(t *testing.T) { pn.testLaterStart(t, first) })
		t.Run("a profile that names no chunk is ignored", func(t *testing.T) { pn.testBogusProfile(t, first) })
	}
	t.Run("a start longer than a profile gives it once", pn.testLongStart)
	t.Run("off: neither asks nor gives", pn.testProfilesOff)
	t.Run("authorization", func(t *testing.T) { testProfileAccess(t, admin, pn.node, img.repo, pn.data) })
}

// start runs the image on a node of its own, its container reading the
// files read, and checks what it printed.
func (pn *profileNodes) start(t *testing.T, o snapshotterOptions, read []string) *nodeEnv {
	t.Helper()
	o.cacheMaxBytes = 1 << 30
	n := startNode(t, pn.flavor, o, nil)
	for i, l := range n.pull(pn.img).Layers {
		if !l.Streamed {
			t.Fatalf("layer %d %s was not streamed", i, l.Digest)
		}
	}
	stdout := n.run(pn.img, "e2e-profiled", "busybox echo streamed-ok && busybox cat /etc/streamed.txt && busybox sha256sum "+strings.Join(read, " "))
	want := "streamed-ok\n" + streamedText
	for _, p := range read {
		want += pn.img.sums[p] + "  " + p + "\n"
	}
	if stdout != want {
		t.Errorf("the container printed\n%q\nwant\n%q", stdout, want)
	}
	return n
}

// profiles are the registry's profiles of the image's layers, by streamed
// digest.
func (pn *profileNodes) profiles(t *testing.T) map[digest.Digest]startupProfile {
	t.Helper()
	out := map[digest.Digest]startupProfile{}
	for _, l := range pn.twins {
		if p, ok := pn.admin.startupProfile(t, pn.img.repo, l.Digest); ok {
			out[l.Digest] = p
		}
	}
	return out
}

// waitDataProfile polls the registry until it has a profile of the data
// layer that ok accepts, reading it as c.
func (pn *profileNodes) waitDataProfile(t *testing.T, c *ociClient, what string, ok func(startupProfile) bool) startupProfile {
	t.Helper()
	var p startupProfile
	waitFor(t, 30*time.Second, what, func() bool {
		var found bool
		p, found = c.startupProfile(t, pn.img.repo, pn.data.Digest)
		return found && ok(p)
	})
	return p
}

// completed waits until background completion has verified every layer.
// It starts once reads are quiet for the background delay, as long as a
// recording waits, and takes longer than a PUT: a node that was to give a
// profile has given it by then.
func (pn *profileNodes) completed(t *testing.T, n *nodeEnv) map[string]float64 {
	t.Helper()
	var m map[string]float64
	waitFor(t, time.Minute, "background completion verifies every layer", func() bool {
		m = n.sn.metrics()
		return m["sluice_snapshotter_layers_completed_total"] >= float64(len(pn.img.Layers))
	})
	return m
}

// keptProfiles checks that a node whose start is over gave no profile: the
// registry's are those it had before.
func (pn *profileNodes) keptProfiles(t *testing.T, m map[string]float64, before map[digest.Digest]startupProfile) {
	t.Helper()
	if got := m[metricProfilesRecorded]; got != 0 {
		t.Errorf("%s is %v: the node gave a profile though the registry's covered its start", metricProfilesRecorded, got)
	}
	after := pn.profiles(t)
	for l, p := range before {
		if q := after[l]; q.UpdatedAt != p.UpdatedAt || !slices.Equal(q.Ranges, p.Ranges) {
			t.Errorf("the profile of %s changed from %+v to %+v", l, p, q)
		}
	}
	if len(after) != len(before) {
		t.Errorf("the registry had profiles of %d layers before the start, %d after", len(before), len(after))
	}
}

// forget deletes the profiles of the image's layers.
func (pn *profileNodes) forget(t *testing.T) {
	t.Helper()
	for _, l := range pn.twins {
		_, _, err := pn.admin.do(context.Background(), http.MethodDelete, profilePath(pn.img.repo, l.Digest), nil, nil, http.StatusNoContent)
		var se *statusError
		if err != nil && !(errors.As(err, &se) && se.Got == http.StatusNotFound) {
			t.Fatal(err)
		}
	}
}

// testFirstStart starts the image on a node while the registry has no
// profile of it: the node gives the profile of the data layer, three
// chunks (one a file read).
func (pn *profileNodes) testFirstStart(t *testing.T) profileRun {
	// No background completion: every byte the container reads is
	// fetched on demand, and the recording ends after 2 s of quiet.
	o := pn.creds
	o.backgroundDelay = "-1s"
	n := pn.start(t, o, profiledShortStart)
	var run profileRun
	run.profile = pn.waitDataProfile(t, pn.node, "the registry has the data layer's startup profile (read with the node's pull-only token)",
		func(startupProfile) bool { return true })
	checkProfile(t, run.profile, pn.data, len(profiledShortStart))
	m := n.sn.metrics()
	run.onDemand = m[metricOnDemandBytes]
	if m[metricProfilesRecorded] < 1 {
		t.Errorf("%s is %v after the node gave a profile", metricProfilesRecorded, m[metricProfilesRecorded])
	}
	if got := n.sn.managerLogLines("startup profile recorded", "layer="+pn.data.Annotations[annotationSourceDigest]); len(got) != 1 {
		t.Errorf("the FUSE manager logged %d lines recording the data layer's profile, want 1: %q", len(got), got)
	}
	// A start that read more than half of a layer (busybox's) gives none
	// of it; every profile the node says it gave is there.
	for _, l := range pn.img.Layers {
		if len(n.sn.managerLogLines("startup profile recorded", "layer="+l.Digest.String())) > 0 {
			if p, ok := pn.node.startupProfile(t, pn.img.repo, pn.twins[l.Digest].Digest); !ok {
				t.Errorf("the node recorded the profile of layer %s but the registry has none", l.Digest)
			} else {
				checkProfile(t, p, pn.twins[l.Digest], 1)
			}
		}
	}
	t.Logf("the data layer's profile: %d ranges, %d of %d bytes; metrics: %s", len(run.profile.Ranges), run.profile.bytes(), pn.data.Size,
		pickMetrics(m, "startup_profiles", "fetched_bytes"))
	return run
}

// testLaterStart starts the image on a node after the first: it prefetches
// the profile, so its container's reads find the data cached, and gives
// none (the profile covered its start).
func (pn *profileNodes) testLaterStart(t *testing.T, first profileRun) {
	before := pn.profiles(t)
	o := pn.creds
	o.backgroundDelay = "2s"
	n := pn.start(t, o, profiledShortStart)
	m := pn.completed(t, n)
	if m[metricProfilesPrefetched] < 1 || len(n.sn.managerLogLines("startup profile prefetched", "layer="+pn.data.Annotations[annotationSourceDigest])) != 1 {
		t.Errorf("the node did not prefetch the data layer's profile: %s is %v", metricProfilesPrefetched, m[metricProfilesPrefetched])
	}
	if got := m[metricPrefetchBytes]; got < float64(first.profile.bytes()) {
		t.Errorf("the node prefetched %v bytes, fewer than the %d of the data layer's profile", got, first.profile.bytes())
	}
	// Both nodes fetch the TOCs and busybox on demand; the data the
	// container read, only the first.
	if got := m[metricOnDemandBytes]; got > first.onDemand-float64(first.profile.bytes())/2 {
		t.Errorf("the node fetched %v bytes on demand, the first %v: want at least half the profile's %d bytes fewer", got, first.onDemand, first.profile.bytes())
	}
	pn.keptProfiles(t, m, before)
	t.Logf("on demand %v bytes (the first node %v); metrics: %s", m[metricOnDemandBytes], first.onDemand, pickMetrics(m, "startup_profiles", "fetched_bytes"))
}

// testBogusProfile gives the registry a profile of the data layer whose
// ranges are off by one byte, inside the blob but no chunk's: a node
// ignores it, reads right, and gives its own in its place (a profile that
// names no chunk counts as none).
func (pn *profileNodes) testBogusProfile(t *testing.T, first profileRun) {
	bogus := make([][2]int64, len(first.profile.Ranges))
	for i, r := range first.profile.Ranges {
		bogus[i] = [2]int64{r[0] + 1, r[1]}
	}
	pn.admin.putStartupProfile(t, pn.img.repo, pn.data.Digest, bogus)
	o := pn.creds
	o.backgroundDelay = "-1s"
	n := pn.start(t, o, profiledShortStart)
	ignored := fmt.Sprintf("ignored=%d of=%d", len(bogus), len(bogus))
	waitFor(t, 30*time.Second, "the FUSE manager ignores the bogus profile", func() bool {
		return len(n.sn.managerLogLines("the layer's startup profile names ranges that are not chunks of it; they are ignored",
			"layer="+pn.data.Annotations[annotationSourceDigest], ignored)) == 1
	})
	// Nothing fetched for the profile was taken for a chunk: the
	// container's reads fetched theirs.
	if got := n.sn.metrics()[metricOnDemandBytes]; got < float64(first.profile.bytes()) {
		t.Errorf("the node fetched %v bytes on demand, fewer than the %d of the chunks its container read", got, first.profile.bytes())
	}
	pn.waitDataProfile(t, pn.admin, "the node replaces the bogus profile with its recording", func(p startupProfile) bool {
		return slices.Equal(p.Ranges, first.profile.Ranges)
	})
}

// testLongStart starts the image with a start that reads more of the data
// layer than a profile may hold (half of it): the profile keeps the first
// chunks read, and a later node whose start reads the same finds it as
// good as any could be and keeps it.
func (pn *profileNodes) testLongStart(t *testing.T) {
	pn.forget(t)
	o := pn.creds
	o.backgroundDelay = "-1s"
	pn.start(t, o, profiledLongStart)
	p := pn.waitDataProfile(t, pn.admin, "the registry has the data layer's startup profile", func(startupProfile) bool { return true })
	checkProfile(t, p, pn.data, 3)
	if len(p.Ranges) >= len(profiledLongStart) {
		t.Fatalf("the profile of a start that read %d of %d files has %d ranges: it was not cut to half the layer", len(profiledLongStart), len(pn.img.sums), len(p.Ranges))
	}
	before := pn.profiles(t)
	o.backgroundDelay = "2s"
	n := pn.start(t, o, profiledLongStart)
	pn.keptProfiles(t, pn.completed(t, n), before)
}

// testProfilesOff starts the image on a node with startup profiles off: it
// sends no request for a profile, and the registry has none after.
func (pn *profileNodes) testProfilesOff(t *testing.T) {
	pn.forget(t)
	mark := len(pn.reg.accessLog())
	o := pn.creds
	o.backgroundDelay, o.startupProfilesOff = "2s", true
	n := pn.start(t, o, profiledShortStart)
	m := pn.completed(t, n)
	for _, e := range pn.reg.accessLog()[mark:] {
		// A node only reads and gives profiles; the DELETEs of forget
		// may be logged after the mark.
		if strings.Contains(e.Path, "/_profiles/") && e.Method != http.MethodDelete {
			t.Errorf("with startup profiles off, the node sent %s %s (%d)", e.Method, e.Path, e.Status)
		}
	}
	if got := pn.profiles(t); len(got) != 0 {
		t.Errorf("with startup profiles off, the registry has profiles after a start: %v", got)
	}
	for _, k := range []string{metricProfilesPrefetched, metricProfilesRecorded, metricProfilesFailed, metricPrefetchBytes} {
		if m[k] != 0 {
			t.Errorf("with startup profiles off, %s is %v", k, m[k])
		}
	}
}

// checkProfile checks that a profile is one of layer and covers at least
// min chunks: its ranges inside the blob and at different offsets, at most
// half of it in all.
func checkProfile(t *testing.T, p startupProfile, layer ocispec.Descriptor, minRanges int) {
	t.Helper()
	if p.Digest != layer.Digest.String() {
		t.Errorf("the profile of %s says it is of %s", layer.Digest, p.Digest)
	}
	if _, err := time.Parse(time.RFC3339, p.UpdatedAt); err != nil {
		t.Errorf("the profile of %s has updatedAt %q: %v", layer.Digest, p.UpdatedAt, err)
	}
	if len(p.Ranges) < minRanges {
		t.Errorf("the profile of %s has %d ranges, want at least %d: %v", layer.Digest, len(p.Ranges), minRanges, p.Ranges)
	}
	seen := map[int64]bool{}
	for _, r := range p.Ranges {
		if r[0] < 0 || r[1] <= 0 || r[0]+r[1] > layer.Size || seen[r[0]] {
			t.Errorf("the profile of %s (%d bytes) has range %v, not inside it or repeated", layer.Digest, layer.Size, r)
		}
		seen[r[0]] = true
	}
	if p.bytes() > layer.Size/2 {
		t.Errorf("the profile of %s covers %d of its %d bytes, more than half", layer.Digest, p.bytes(), layer.Size)
	}
}

// testProfileAccess checks who may read, give and forget a layer's profile
// in repo: pull (the node's token) reads and gives, a token of another
// repository does neither, forgetting needs delete.
func testProfileAccess(t *testing.T, admin, node *ociClient, repo string, layer ocispec.Descriptor) {
	ctx := context.Background()
	for name, actions := range map[string][]string{
		"e2e-node-elsewhere":       {"repositories/e2e/node/elsewhere/content/read", "repositories/e2e/node/elsewhere/content/delete"},
		"e2e-node-profiled-delete": {"repositories/" + repo + "/content/read", "repositories/" + repo + "/content/delete"},
	} {
		if _, err := admin.mgmt(ctx, http.MethodPost, "/acr/v1/_scopemaps", map[string]any{"name": name, "actions": actions}, http.StatusCreated, nil); err != nil {
			t.Fatal(err)
		}
	}
	s, d := createToken(t, admin, "e2e-node-stranger", "e2e-node-elsewhere"), createToken(t, admin, "e2e-node-deleter", "e2e-node-profiled-delete")
	stranger, deleter, anonymous := admin.as(s.user, s.password), admin.as(d.user, d.password), admin.as("", "")
	path := profilePath(repo, layer.Digest)
	const given = `"ranges":[[0,1024]]`
	for _, tc := range []struct {
		name     string
		c        *ociClient
		method   string
		body     string
		want     int
		wantBody string
	}{
		{"pull-only gives", node, http.MethodPut, "{" + given + "}", http.StatusNoContent, ""},
		{"pull-only reads", node, http.MethodGet, "", http.StatusOK, given},
		{"anonymous reads", anonymous, http.MethodGet, "", http.StatusUnauthorized, ""},
		{"another repository's token reads", stranger, http.MethodGet, "", http.StatusForbidden, ""},
		{"another repository's token gives", stranger, http.MethodPut, `{"ranges":[[0,2048]]}`, http.StatusForbidden, ""},
		{"another repository's token forgets", stranger, http.MethodDelete, "", http.StatusForbidden, ""},
		{"pull-only forgets", node, http.MethodDelete, "", http.StatusForbidden, ""},
		{"pull-only reads what it gave", node, http.MethodGet, "", http.StatusOK, given},
		{"delete forgets", deleter, http.MethodDelete, "", http.StatusNoContent, ""},
		{"pull-only reads none", node, http.MethodGet, "", http.StatusNotFound, "PROFILE_UNKNOWN"},
	} {
		var body []byte
		hdr := http.Header{}
		if tc.body != "" {
			body = []byte(tc.body)
			hdr.Set("Content-Type", "application/json")
		}
		_, b, err := tc.c.do(ctx, tc.method, path, hdr, body, tc.want)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		} else if !strings.Contains(string(b), tc.wantBody) {
			t.Errorf("%s: answered %s, want %s in it", tc.name, b, tc.wantBody)
		}
	}
}
