package registry

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/internal/metadata"
)

// Store is what the registry keeps in its metadata store, one small
// interface for each part of the registry. internal/metadata implements it
// over SQL; internal/metadata/storetest says what any implementation must
// do. Digests are strings here: the store keeps them, the registry parses
// and checks them.
type Store interface {
	RepositoryStore
	BlobLinkStore
	ManifestStore
	ListingStore
	RestoreStore
	UploadStore
	ProfileStore
	GCStore
}

// RepositoryStore keeps repositories and their settings.
type RepositoryStore interface {
	GetRepository(ctx context.Context, name string) (*metadata.Repository, error)
	UpdateRepository(ctx context.Context, name string, p metadata.RepositoryPatch, create bool) error
	DeleteRepository(ctx context.Context, name string, d metadata.Deletion) ([]string, error)
	ListRepositories(ctx context.Context, last string, n int) ([]string, bool, error)
	CheckWritable(ctx context.Context, name string) error
	TotalSize(ctx context.Context) (int64, error)
	// For the portal's lists.
	SearchRepositories(ctx context.Context, contains, last string, n int) ([]string, bool, error)
	RepositorySummaries(ctx context.Context, names []string) ([]metadata.Repository, error)
	LargestRepositories(ctx context.Context, n int) ([]metadata.RepositorySize, error)
	DeletedManifestsAll(ctx context.Context, n int) ([]metadata.Deleted, error)
}

// BlobLinkStore keeps which blobs are stored and which repositories link
// them; the bytes are the blob store's.
type BlobLinkStore interface {
	TouchBlob(ctx context.Context, dgst string) (markedAt time.Time, err error)
	LinkBlob(ctx context.Context, repo, dgst string, size int64) error
	MountBlob(ctx context.Context, repo, from, dgst string) (int64, error)
	LinkStoredBlob(ctx context.Context, repo, dgst string) error
	BlobSize(ctx context.Context, repo, dgst string) (size int64, readable bool, err error)
	UnlinkBlob(ctx context.Context, repo, dgst string) error
	UnlinkUnreferencedBlob(ctx context.Context, repo, dgst string) error
	RepositoriesWithBlob(ctx context.Context, dgst string, limit int) ([]string, error)
}

// ManifestStore keeps manifests, tags and the referrers index.
type ManifestStore interface {
	PutManifest(ctx context.Context, m *metadata.Manifest, tags []string, enqueue *metadata.Operation) error
	GetManifest(ctx context.Context, repo, tag, dgst string, withPayload bool) (*metadata.Manifest, error)
	DeleteManifest(ctx context.Context, repo, dgst string, d metadata.Deletion) ([]string, error)
	DeleteTag(ctx context.Context, repo, tag string, soft bool) error
	ListTags(ctx context.Context, repo, last string, n int) ([]string, bool, error)
	Referrers(ctx context.Context, repo, dgst, artifactType string) ([]metadata.Manifest, error)
}

// ListingStore lists tags and manifests with their attributes, as the
// management API shows them, and changes the attributes.
type ListingStore interface {
	Tags(ctx context.Context, repo, name, last string, n int) ([]metadata.TagInfo, bool, error)
	Manifests(ctx context.Context, repo, dgst, last string, n int) ([]metadata.ManifestInfo, bool, error)
	UpdateTagAttributes(ctx context.Context, repo, tag string, p metadata.AttributesPatch) error
	UpdateManifestAttributes(ctx context.Context, repo, dgst string, p metadata.AttributesPatch) error
}

// RestoreStore lists what was soft-deleted and restores it.
type RestoreStore interface {
	DeletedRepositories(ctx context.Context) ([]metadata.Deleted, error)
	DeletedManifests(ctx context.Context, repo string) ([]metadata.Deleted, error)
	DeletedTags(ctx context.Context, repo string) ([]metadata.Deleted, error)
	ManifestPayload(ctx context.Context, repo, dgst string) (mediaType string, payload []byte, err error)
	RestoreManifest(ctx context.Context, repo, dgst, tag string, force bool, enqueue *metadata.Operation) error
}

// UploadStore keeps upload sessions; their parts are in the blob store.
type UploadStore interface {
	CreateUpload(ctx context.Context, u *metadata.Upload) error
	GetUpload(ctx context.Context, repo, id string) (*metadata.Upload, error)
	AppendUploadPart(ctx context.Context, repo, id string, from int64, part metadata.UploadPart, hashState []byte) error
	TouchUpload(ctx context.Context, id string) error
	DeleteUpload(ctx context.Context, id string) error
	UploadsWithPrefix(ctx context.Context, repo, prefix string) ([]*metadata.Upload, error)
	StaleUploads(ctx context.Context, cutoff time.Time, limit int) ([]*metadata.Upload, error)
	UploadExists(ctx context.Context, id string) (bool, error)
}

// ProfileStore keeps the startup profiles of blobs, per repository.
type ProfileStore interface {
	StartupProfile(ctx context.Context, repo, dgst string) (ranges []byte, updated time.Time, err error)
	PutStartupProfile(ctx context.Context, repo, dgst string, ranges []byte) error
	DeleteStartupProfile(ctx context.Context, repo, dgst string) error
}

// GCStore is what garbage collection asks of the store: purge what was
// soft-deleted, drop links nothing references, and mark, then forget, the
// blobs linked nowhere.
type GCStore interface {
	PurgeDeleted(ctx context.Context, cutoff time.Time) (int64, error)
	UnlinkUnreferencedBlobs(ctx context.Context, cutoff time.Time) (int64, error)
	MarkBlobsForCollection(ctx context.Context, cutoff, staleMark time.Time, limit int) ([]string, error)
	ForgetBlob(ctx context.Context, dgst string) error
}
