package main

import (
	"context"
	"io"
	"path/filepath"

	"github.com/awslabs/soci-snapshotter/config"
	socifs "github.com/awslabs/soci-snapshotter/fs"
	"github.com/awslabs/soci-snapshotter/metadata"
	"github.com/awslabs/soci-snapshotter/service"
	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/reference"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
)

// newSOCI is soci-snapshotter-grpc's snapshotter with its default
// configuration (the bbolt metadata store as its command opens it) and the
// benchmark's credentials. Its gRPC server puts a namespace on every call:
// containerd 1.6 sends a proxy snapshotter none, and SOCI then fails with
// "context has no namespace attached".
func newSOCI(ctx context.Context, root string, creds func(string) (string, string, error)) (snapshots.Snapshotter, []grpc.ServerOption, error) {
	if err := service.Supported(root); err != nil {
		return nil, nil, err
	}
	cfg := config.NewConfig()
	db, err := bolt.Open(filepath.Join(root, "metadata.db"), 0o600, &bolt.Options{NoFreelistSync: true, InitialMmapSize: 64 << 20, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, nil, err
	}
	store := func(sr *io.SectionReader, toc ztoc.TOC, opts ...metadata.Option) (metadata.Reader, error) {
		return metadata.NewReader(db, sr, toc, opts...)
	}
	sn, err := service.NewSociSnapshotterService(ctx, root, &cfg.ServiceConfig,
		service.WithCredsFuncs(func(_ reference.Spec, host string) (string, string, error) { return creds(host) }),
		service.WithFilesystemOptions(socifs.WithMetadataStore(store)))
	if err != nil {
		return nil, nil, err
	}
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(withNamespace(ctx), req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, &namespacedStream{ServerStream: ss, ctx: withNamespace(ss.Context())})
		}),
	}
	return sn, opts, nil
}

// withNamespace is ctx with the namespace of the call, or "default" (the
// benchmark's) when the caller sent none, set for outgoing calls too.
func withNamespace(ctx context.Context) context.Context {
	ns, ok := namespaces.Namespace(ctx)
	if !ok {
		ns = namespaces.Default
	}
	return namespaces.WithNamespace(ctx, ns)
}

type namespacedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *namespacedStream) Context() context.Context { return s.ctx }
