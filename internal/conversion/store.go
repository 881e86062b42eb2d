package conversion

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/internal/metadata"
)

// Store is what the conversion service keeps in the metadata store: its
// operation queue and the cache of converted layers. Images, blobs and
// manifests it reads and writes through the registry, never here. It must
// be the store the registry writes to: a push to a streaming repository
// enqueues its conversion in the push's own transaction.
type Store interface {
	Queue
	LayerCache
}

// Queue is the durable queue of operations. Workers claim an operation
// with a lease, renew it with heartbeats, and finish it or hand it back;
// a lease that runs out lets another worker take the operation over.
type Queue interface {
	// CreateOperation records o, or returns the image's active operation
	// of the same kind with metadata.ErrOperationActive.
	CreateOperation(ctx context.Context, o *metadata.Operation) (*metadata.Operation, error)
	GetOperation(ctx context.Context, id string) (*metadata.Operation, error)
	ActiveOperation(ctx context.Context, kind, repo, dgst string) (*metadata.Operation, error)
	LatestOperation(ctx context.Context, kind, repo, dgst string) (*metadata.Operation, error)
	// ListOperations lists operations newest first, after the operation
	// last, at most n, and whether more follow.
	ListOperations(ctx context.Context, f metadata.OperationFilter, last string, n int) ([]*metadata.Operation, bool, error)
	ClaimOperation(ctx context.Context, kind, owner string, lease time.Duration) (*metadata.Operation, error)
	// Heartbeat returns the operation's status as stored; anything but
	// Running tells the worker to stop.
	Heartbeat(ctx context.Context, id, owner string, lease time.Duration, progress, total int64, details string) (string, error)
	FinishOperation(ctx context.Context, id, owner string, final metadata.Operation) (bool, error)
	RetryOperation(ctx context.Context, id, owner string, delay time.Duration, details string) error
	CancelOperation(ctx context.Context, id string) (*metadata.Operation, error)
	CancelOperationsFor(ctx context.Context, kind, repo string, digests []string) ([]string, error)
	// QueuedOperations counts the operations waiting for a worker, by
	// kind.
	QueuedOperations(ctx context.Context) (map[string]int64, error)
	// ArtifactStates reads, for each image, its live artifacts of a type
	// and the status of its latest operation of a kind.
	ArtifactStates(ctx context.Context, repo, artifactType, kind string, digests []string) (map[string]metadata.ArtifactState, error)
}

// LayerCache remembers layers converted before, so that a layer shared by
// several images is converted once.
type LayerCache interface {
	GetConvertedLayer(ctx context.Context, source, version string) (*metadata.ConvertedLayer, error)
	PutConvertedLayer(ctx context.Context, c *metadata.ConvertedLayer) error
}
