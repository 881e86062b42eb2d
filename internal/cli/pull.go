package cli

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/lazypull"
)

// NewPullCommand is `sluice pull`: a lazy pull through the node's
// containerd, for the node daemon's users.
func NewPullCommand(a *App) *cobra.Command {
	o := lazypull.Options{}
	cmd := &cobra.Command{
		Use:   "pull IMAGE",
		Short: "Pull an image through containerd, streaming the layers that have a streaming artifact",
		Long: `Pull asks the node's containerd to pull IMAGE (REGISTRY/REPOSITORY:TAG, or a
registry name from 'sluice login' in place of REGISTRY) and unpack it with the
snapshotter, labelling each layer with the image so that sluice-snapshotter
can mount streamed layers lazily instead of downloading them. It prints the
image, its digest, the time the pull took and each layer with its size and
how it got to the node: streamed, downloaded, or present (on the node before
this pull: another image has it, or the image was pulled before). -o table
has a row for the image, then a row per layer. A layer is downloaded when
the image has no streaming artifact (yet), and the snapshotter's log says
why.

Credentials are those of 'sluice login' for the registry, else docker's
config.json. Run it as root, on a node where sluice-snapshotter runs.`,
		Example: `  sluice pull 127.0.0.1:5000/team/app:1.0 --plain-http
  sluice pull myreg/team/app:1.0 -o table
  sluice pull --address /run/containerd/containerd.sock --namespace k8s.io registry.example.com/team/app:1.0
  ctr run --rm --snapshotter sluice registry.example.com/team/app:1.0 app1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.config()
			if err != nil {
				return err
			}
			host, rest := c.splitRegistry(args[0])
			if host == "" {
				return usageErrorf("image %q: give the registry too, as REGISTRY/REPOSITORY:TAG (or a name from 'sluice login')", args[0])
			}
			reg, err := a.resolveRegistry(host)
			if err != nil {
				return err
			}
			img, err := parseImage(rest)
			if err != nil {
				return err
			}
			ref := reg.Host() + "/" + img.String()
			if !cmd.Flags().Changed("plain-http") {
				o.PlainHTTP = reg.PlainHTTP()
			}
			cred := a.credential(ctx, reg)
			if cred.Username != "" || cred.Password != "" {
				o.Credentials = func(string) (string, string, error) { return cred.Username, cred.Password, nil }
			}
			pull := a.pull
			if pull == nil {
				pull = lazypull.Pull
			}
			res, err := pull(ctx, ref, o)
			if err != nil {
				return pullRefusal(err, img.Repository, o.Credentials != nil)
			}
			out := newPullResult(res)
			if a.interactive() {
				fmt.Fprintf(a.Stderr, "%s: %s, pulled in %s\n", ref, layerCounts(res.Layers), out.Duration)
				for _, l := range res.Layers {
					if l.How() == "downloaded" && o.Snapshotter == "sluice" {
						a.hint("layers without a streaming artifact were downloaded; the snapshotter's log says why for each")
						break
					}
				}
			}
			return a.print(out, pullTable)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Address, "address", "/run/containerd/containerd.sock", "containerd's socket")
	f.StringVar(&o.Namespace, "namespace", "default", "containerd namespace (k8s.io for Kubernetes)")
	f.StringVar(&o.Snapshotter, "snapshotter", "sluice", "snapshotter to unpack with")
	f.BoolVar(&o.PlainHTTP, "plain-http", false, "talk HTTP to the registry (default: as its login URL says; loopback registries use HTTP)")
	f.StringVar(&o.Platform, "platform", "", "platform to pull, like linux/arm64 (default: this node's)")
	return cmd
}

// pullRefusal words containerd's refusal of a pull as the other commands
// word the registry's: containerd reports only the challenge's error
// ("server message: insufficient_scope: authorization failed"), so a
// refusal of credentials that were sent is taken for the pull permission
// they lack on the repository; one without credentials, or the token
// service's 401 to a wrong password, gets the hint on logging in.
func pullRefusal(err error, repository string, sentCredentials bool) error {
	status, refused := errors.AsType[remoteerrors.ErrUnexpectedStatus](err)
	switch {
	case errors.Is(err, docker.ErrInvalidAuthorization) && sentCredentials && strings.Contains(err.Error(), "insufficient_scope"):
		return &explainedError{err.Error() + "\n" + notAllowed([]string{"repository:" + repository + ":pull"}), err}
	case errors.Is(err, docker.ErrInvalidAuthorization), refused && status.StatusCode == http.StatusUnauthorized:
		return &explainedError{err.Error() + "\n" + notLoggedIn, err}
	}
	return err
}

// pullResult is what pull prints: the image, its digest, how long the pull
// took ("1.25s") and how each layer got to the node.
type pullResult struct {
	Image    string           `json:"image"`
	Digest   digest.Digest    `json:"digest"`
	Duration string           `json:"duration"`
	Layers   []lazypull.Layer `json:"layers"`
}

func newPullResult(res *lazypull.Result) pullResult {
	layers := res.Layers
	if layers == nil {
		layers = []lazypull.Layer{}
	}
	return pullResult{Image: res.Image, Digest: res.Digest, Duration: res.Duration.Round(time.Millisecond).String(), Layers: layers}
}

// pullTable is a row for the image (its digest, the size of its layers,
// how they came and the time the pull took), then a row per layer:
// streamed, downloaded or present.
func pullTable(v any) []tableRow {
	layers, _ := field(v, "layers").([]any)
	var size float64
	var hows []lazypull.Layer
	for _, l := range layers {
		n, _ := field(l, "size").(float64)
		size += n
		hows = append(hows, lazypull.Layer{Streamed: field(l, "streamed") == true, Present: field(l, "present") == true})
	}
	rows := []tableRow{{{Header: "Image", Value: field(v, "image")}, {Header: "Digest", Value: field(v, "digest")},
		{Header: "Size", Value: size}, {Header: "Pulled", Value: layerCounts(hows)}, {Header: "Time", Value: field(v, "duration")}}}
	for i, l := range layers {
		rows = append(rows, tableRow{{Header: "Image", Value: fmt.Sprintf("  layer %d", i+1)}, {Header: "Digest", Value: field(l, "digest")},
			{Header: "Size", Value: field(l, "size")}, {Header: "Pulled", Value: hows[i].How()}})
	}
	return rows
}

// layerCounts says how many layers came each way: "2 streamed, 1 present".
func layerCounts(layers []lazypull.Layer) string {
	counts := map[string]int{}
	for _, l := range layers {
		counts[l.How()]++
	}
	var parts []string
	for _, how := range []string{"streamed", "downloaded", "present"} {
		if counts[how] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[how], how))
		}
	}
	if len(parts) == 0 {
		return "no layers"
	}
	return strings.Join(parts, ", ")
}
