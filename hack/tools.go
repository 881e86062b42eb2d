//go:build tools

// Package hack pins modules that packages under construction will import,
// so that concurrent work does not race on go.mod. Remove once all are used.
package hack

import (
	_ "github.com/containerd/stargz-snapshotter/estargz"
	_ "github.com/containerd/containerd/v2/contrib/snapshotservice"
	_ "github.com/containerd/containerd/v2/core/snapshots/storage"
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/hanwen/go-fuse/v2/fs"
	_ "github.com/google/uuid"
	_ "golang.org/x/crypto/bcrypt"
	_ "golang.org/x/time/rate"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/opencontainers/go-digest"
	_ "github.com/opencontainers/image-spec/specs-go/v1"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "go.yaml.in/yaml/v3"
	_ "gocloud.dev/blob/fileblob"
	_ "modernc.org/sqlite"
	_ "oras.land/oras-go/v2"
)
