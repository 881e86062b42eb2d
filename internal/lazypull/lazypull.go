// Package lazypull pulls an image through containerd with the labels that
// let a remote snapshotter stream its layers (what `sluice pull` runs, like
// stargz's `ctr-remote rpull`), and reports which layers were streamed,
// which were downloaded and which were on the node already.
package lazypull

import (
	"context"
	"fmt"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
)

// Options configure a pull.
type Options struct {
	// Address is containerd's socket; Namespace its namespace.
	Address, Namespace string
	// Snapshotter unpacks the image ("sluice").
	Snapshotter string
	// PlainHTTP talks HTTP to the registry.
	PlainHTTP bool
	// Credentials returns the registry credentials of a host.
	Credentials func(host string) (string, string, error)
	// Platform to pull ("" is the host's).
	Platform string
}

// Layer says how one layer of the pulled image got to the node: streamed
// (mounted lazily by the snapshotter), downloaded, or present (on the node
// before the pull, which then neither streamed nor downloaded it).
type Layer struct {
	Digest   digest.Digest `json:"digest"`
	Size     int64         `json:"size"`
	Streamed bool          `json:"streamed"`
	Present  bool          `json:"present"`
}

// How names the way a layer got to the node: "streamed", "downloaded" or
// "present".
func (l Layer) How() string {
	switch {
	case l.Present:
		return "present"
	case l.Streamed:
		return "streamed"
	}
	return "downloaded"
}

// Result describes a pull.
type Result struct {
	Image    string
	Digest   digest.Digest
	Layers   []Layer
	Duration time.Duration
}

// Pull pulls ref into containerd and unpacks it with the snapshotter,
// labelling each layer with the image so that the snapshotter can stream
// it. It uses the classic client-side pull, which every containerd from 1.6
// on serves.
func Pull(ctx context.Context, ref string, o Options) (*Result, error) {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.Snapshotter == "" {
		o.Snapshotter = "sluice"
	}
	client, err := containerd.New(o.Address, containerd.WithDefaultNamespace(o.Namespace), containerd.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", o.Address, err)
	}
	defer client.Close()
	opts := []containerd.RemoteOpt{
		containerd.WithResolver(NewResolver(ctx, o)),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(o.Snapshotter),
		containerd.WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(ref)),
	}
	if o.Platform != "" {
		opts = append(opts, containerd.WithPlatform(o.Platform))
	}
	start := time.Now()
	img, err := client.Pull(ctx, ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	res := &Result{Image: ref, Digest: img.Target().Digest, Duration: time.Since(start)}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return res, fmt.Errorf("read the pulled image's layers: %w", err)
	}
	manifest, err := imagesManifest(ctx, img)
	if err != nil {
		return res, fmt.Errorf("read the pulled image's manifest: %w", err)
	}
	sn := client.SnapshotService(o.Snapshotter)
	for i := range diffIDs {
		var l Layer
		if i < len(manifest.Layers) {
			l.Digest, l.Size = manifest.Layers[i].Digest, manifest.Layers[i].Size
		}
		// A layer's snapshot is keyed by its chain ID; the snapshotter
		// labels the ones it mounted remotely. One made before the pull
		// started was there already, however it came.
		if info, err := sn.Stat(ctx, identity.ChainID(diffIDs[:i+1]).String()); err == nil {
			l.Present = info.Created.Before(start)
			_, remote := info.Labels["containerd.io/snapshot/remote"]
			l.Streamed = remote && !l.Present
		}
		res.Layers = append(res.Layers, l)
	}
	return res, nil
}

// NewResolver is the resolver Pull fetches with: the registry's hosts as
// containerd's hosts.toml files say, HTTP when o.PlainHTTP, and
// o.Credentials for every host.
func NewResolver(ctx context.Context, o Options) remotes.Resolver {
	hostOpts := config.HostOptions{Credentials: o.Credentials}
	if o.PlainHTTP {
		hostOpts.DefaultScheme = "http"
	}
	return docker.NewResolver(docker.ResolverOptions{Hosts: configureOnce(config.ConfigureHosts(ctx, hostOpts))})
}

// configureOnce configures each registry host once per pull. containerd's
// ConfigureHosts makes a new HTTP client and authorizer on every call, so
// resolving the image and fetching its manifest and config would each open
// connections and ask for a token again.
func configureOnce(hosts docker.RegistryHosts) docker.RegistryHosts {
	var mu sync.Mutex
	done := map[string][]docker.RegistryHost{}
	return func(host string) ([]docker.RegistryHost, error) {
		mu.Lock()
		defer mu.Unlock()
		if h, ok := done[host]; ok {
			return h, nil
		}
		h, err := hosts(host)
		if err == nil {
			done[host] = h
		}
		return h, err
	}
}
