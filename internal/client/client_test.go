package client

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/internal/streaming"
)

// newRegistry serves a real registry with authentication on.
func newRegistry(t *testing.T) (host string) {
	t.Helper()
	return servertest.Start(t, func(c *config.Config) { c.AdminPassword = "secret-password" }).Host
}

func TestBlobRanges(t *testing.T) {
	host := newRegistry(t)
	c := New(host, Options{PlainHTTP: true, Credential: StaticCredential(host, "admin", "secret-password")})
	blob := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range blob {
		blob[i] = byte(rng.IntN(256))
	}
	d := digest.FromBytes(blob)
	req, _ := http.NewRequest("POST", c.URL("/v2/app/blobs/uploads/?digest="+d.String()), bytes.NewReader(blob))
	resp, err := c.Do(context.Background(), req, "repository:app:push")
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("push: %v %v", err, resp)
	}
	resp.Body.Close()

	var fetched int64
	br := c.BlobRanges("app", d, int64(len(blob)))
	br.OnFetch = func(n int64) { fetched += n }
	for _, tc := range []struct {
		name   string
		ranges []streaming.Range
	}{
		{"one", []streaming.Range{{Offset: 100, Length: 1000}}},
		{"several apart", []streaming.Range{{Offset: 0, Length: 10}, {Offset: 5000, Length: 300}, {Offset: 1<<20 - 7, Length: 7}}},
		{"adjacent", []streaming.Range{{Offset: 10, Length: 10}, {Offset: 20, Length: 10}}},
		{"many", func() []streaming.Range {
			var rs []streaming.Range
			for i := range 70 {
				rs = append(rs, streaming.Range{Offset: int64(i * 10000), Length: 100})
			}
			return rs
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bufs := make([][]byte, len(tc.ranges))
			for i, r := range tc.ranges {
				bufs[i] = make([]byte, r.Length)
			}
			if err := br.ReadRanges(context.Background(), tc.ranges, bufs); err != nil {
				t.Fatal(err)
			}
			for i, r := range tc.ranges {
				if !bytes.Equal(bufs[i], blob[r.Offset:r.Offset+r.Length]) {
					t.Fatalf("range %d differs", i)
				}
			}
		})
	}
	if fetched == 0 || fetched > 1<<19 {
		t.Fatalf("fetched %d bytes for small ranges", fetched)
	}
	if err := br.ReadRange(context.Background(), make([]byte, 10), 1<<20-5); err == nil {
		t.Fatal("a range past the end was accepted")
	}
	// Without credentials the registry refuses.
	anon := New(host, Options{PlainHTTP: true}).BlobRanges("app", d, int64(len(blob)))
	if err := anon.ReadRange(context.Background(), make([]byte, 10), 0); err == nil {
		t.Fatal("anonymous read succeeded")
	}
}
