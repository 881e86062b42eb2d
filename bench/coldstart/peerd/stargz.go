package main

import (
	"context"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/reference"
	stargzfs "github.com/containerd/stargz-snapshotter/fs"
	memorymetadata "github.com/containerd/stargz-snapshotter/metadata/memory"
	"github.com/containerd/stargz-snapshotter/service"
)

// newStargz is containerd-stargz-grpc's snapshotter with its default
// configuration (the in-memory metadata store, no FUSE manager), the
// benchmark's credentials, and prefetch_async_size when it is set.
func newStargz(ctx context.Context, root string, prefetchAsync int64, creds func(string) (string, string, error)) (snapshots.Snapshotter, error) {
	if err := service.Supported(root); err != nil {
		return nil, err
	}
	var cfg service.Config
	cfg.PrefetchAsyncSize = prefetchAsync
	return service.NewStargzSnapshotterService(ctx, root, &cfg,
		service.WithCredsFuncs(func(host string, _ reference.Spec) (string, string, error) { return creds(host) }),
		service.WithFilesystemOptions(stargzfs.WithMetadataStore(memorymetadata.NewReader)))
}
