// Command portal measures how long the web portal's pages take to render
// for a registry of 1,000 repositories and 10,000 tags (one repository
// holding 1,000 of them), 100 queued conversions and some deleted images:
// it seeds an in-process sluiced (SQLite and a directory, its defaults)
// through the registry service, signs in as the admin and requests each
// page -n times in turn over loopback. It prints the median, p95 and
// maximum of each page against the 50 ms target, and with -markdown the
// same table for docs/benchmarks.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
	"github.com/sluicehq/sluice/internal/server"
)

const password = "bench-portal-admin"

func main() {
	repos := flag.Int("repos", 1000, "repositories")
	tags := flag.Int("tags", 10000, "tags in all (one repository holds a tenth of them)")
	n := flag.Int("n", 40, "requests per page")
	markdown := flag.Bool("markdown", false, "also print a markdown table")
	flag.Parse()

	dir, err := os.MkdirTemp("", "sluice-bench-portal-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := config.Default()
	cfg.Data, cfg.AdminPassword, cfg.Log.Access = dir, password, false
	cfg.Streaming.Workers = 0 // conversions stay queued: the operations page lists them
	cfg.SoftDelete = config.SoftDelete{Enabled: true, RetentionDays: 7}
	ctx := context.Background()
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	start := time.Now()
	big, image := seed(ctx, srv, *repos, *tags)
	fmt.Printf("seeded %d repositories, %d tags in %s\n", *repos, *tags, time.Since(start).Round(time.Second))

	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	c := signIn(ts.URL)
	pages := []string{
		"/",
		"/repositories",
		"/repositories?q=app-09",
		"/repositories/" + big,
		"/repositories/" + big + "?q=v09",
		"/repositories/" + big + "?view=manifests",
		"/repositories/" + big + "/_images/" + image,
		"/repositories/" + big + "/_images/" + image + "?tab=referrers",
		"/operations",
		"/operations?status=NotStarted&repository=" + url.QueryEscape(big),
		"/deleted",
		"/access",
	}
	type row struct {
		page             string
		median, p95, max time.Duration
		bytes            int
	}
	var rows []row
	for _, p := range pages {
		var times []time.Duration
		size := 0
		for range *n {
			t0 := time.Now()
			r, err := c.Get(ts.URL + p)
			if err != nil {
				log.Fatal(err)
			}
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode != http.StatusOK {
				log.Fatalf("%s: %d\n%s", p, r.StatusCode, b)
			}
			times = append(times, time.Since(t0))
			size = len(b)
		}
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		rows = append(rows, row{p, times[len(times)/2], times[len(times)*95/100], times[len(times)-1], size})
	}
	const target = 50 * time.Millisecond
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "page\tmedian ms\tp95 ms\tmax ms\tKiB\tp95 / 50 ms\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%.2f\t\n", r.page, ms(r.median), ms(r.p95), ms(r.max), r.bytes/1024, float64(r.p95)/float64(target))
	}
	tw.Flush()
	if *markdown {
		fmt.Println()
		fmt.Println("| page | median ms | p95 ms | max ms | KiB | p95 / 50 ms |")
		fmt.Println("|---|---:|---:|---:|---:|---:|")
		for _, r := range rows {
			fmt.Printf("| `%s` | %s | %s | %s | %d | %.2f |\n", strings.ReplaceAll(r.page, image, "sha256:…"), ms(r.median), ms(r.p95), ms(r.max), r.bytes/1024, float64(r.p95)/float64(target))
		}
	}
}

// seed pushes the images through the registry service and returns the
// repository with a tenth of the tags and one of its images.
func seed(ctx context.Context, srv *server.Server, repos, tags int) (string, string) {
	reg := srv.Registry
	bigTags := tags / 10
	perRepo := max(1, (tags-bigTags)/max(1, repos-1))
	big := "team-00/app-0000"
	var image string
	for i := range repos {
		repo := fmt.Sprintf("team-%02d/app-%04d", i%20, i)
		count := perRepo
		if i == 0 {
			count = bigTags
		}
		layer := put(ctx, reg, repo, []byte(strings.Repeat(repo, 1000)))
		for j := range count {
			cfg := put(ctx, reg, repo, fmt.Appendf(nil, `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]},"config":{"Labels":{"n":"%d"}}}`, layer.Digest, j))
			cfg.MediaType = ocispec.MediaTypeImageConfig
			m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg,
				Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: layer.Digest, Size: layer.Size}}}
			payload, _ := json.Marshal(m)
			tag := fmt.Sprintf("v%02d.%d", j%100, j)
			res, err := reg.PutManifest(ctx, repo, oci.Reference{Tag: tag}, ocispec.MediaTypeImageManifest, payload, nil)
			if err != nil {
				log.Fatalf("push %s:%s: %v", repo, tag, err)
			}
			if i == 0 && j == 0 {
				image = res.Digest.String()
			}
			switch {
			case i < 100 && j == 0:
				// A queued conversion in each of 100 repositories.
				if _, err := srv.Conversion.Start(ctx, repo, res.Digest, "bench"); err != nil {
					log.Fatal(err)
				}
			case i >= 100 && i < 150 && j == 1:
				// A deleted image in each of 50.
				if err := reg.DeleteManifest(ctx, repo, oci.Reference{Digest: res.Digest.String()}); err != nil {
					log.Fatal(err)
				}
			}
		}
	}
	if _, err := srv.Registry.UpdateRepository(ctx, big, metadata.RepositoryPatch{Streaming: ptr(true)}); err != nil {
		log.Fatal(err)
	}
	return big, image
}

func ptr[T any](v T) *T { return &v }

// put stores a blob in repo.
func put(ctx context.Context, reg *registry.Registry, repo string, b []byte) ocispec.Descriptor {
	d := digest.FromBytes(b)
	n, err := reg.PutBlob(ctx, repo, d, strings.NewReader(string(b)))
	if err != nil {
		log.Fatalf("blob in %s: %v", repo, err)
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: n}
}

// signIn signs in to the portal as the admin and returns the browser.
func signIn(base string) *http.Client {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	r, err := c.Get(base + "/login")
	if err != nil {
		log.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	m := regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`).FindSubmatch(b)
	if m == nil {
		log.Fatal("no CSRF token on the sign-in page")
	}
	r, err = c.PostForm(base+"/login", url.Values{"csrf": {string(m[1])}, "username": {"admin"}, "password": {password}})
	if err != nil {
		log.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		log.Fatalf("sign in: %d", r.StatusCode)
	}
	return c
}
