-- Artifact streaming and repository management: changeable attributes of
-- repositories, manifests and tags; the streaming setting of a repository;
-- soft delete; durable operations (conversions, imports); the cache of
-- converted layers.

ALTER TABLE repositories ADD COLUMN delete_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE repositories ADD COLUMN write_enabled  INTEGER NOT NULL DEFAULT 1;
ALTER TABLE repositories ADD COLUMN read_enabled   INTEGER NOT NULL DEFAULT 1;
ALTER TABLE repositories ADD COLUMN list_enabled   INTEGER NOT NULL DEFAULT 1;
-- Auto-streaming: convertPushedImages, also shown as teleportEnabled.
ALTER TABLE repositories ADD COLUMN streaming      INTEGER NOT NULL DEFAULT 0;

ALTER TABLE manifests ADD COLUMN delete_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE manifests ADD COLUMN write_enabled  INTEGER NOT NULL DEFAULT 1;
ALTER TABLE manifests ADD COLUMN read_enabled   INTEGER NOT NULL DEFAULT 1;
ALTER TABLE manifests ADD COLUMN list_enabled   INTEGER NOT NULL DEFAULT 1;
ALTER TABLE manifests ADD COLUMN updated_at     INTEGER NOT NULL DEFAULT 0;
-- Soft delete: a deleted manifest keeps its row (and so its references,
-- which keep its blobs from garbage collection) until it is purged.
ALTER TABLE manifests ADD COLUMN deleted_at     INTEGER;
-- Platform of an image manifest, read from its config when pushed.
ALTER TABLE manifests ADD COLUMN os             TEXT NOT NULL DEFAULT '';
ALTER TABLE manifests ADD COLUMN architecture   TEXT NOT NULL DEFAULT '';
ALTER TABLE manifests ADD COLUMN config_media_type TEXT NOT NULL DEFAULT '';

ALTER TABLE tags ADD COLUMN delete_enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tags ADD COLUMN write_enabled  INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tags ADD COLUMN read_enabled   INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tags ADD COLUMN list_enabled   INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tags ADD COLUMN created_at     INTEGER NOT NULL DEFAULT 0;

CREATE INDEX manifests_deleted ON manifests(deleted_at) WHERE deleted_at IS NOT NULL;

-- Tags of soft-deleted manifests, kept for listing until purge.
CREATE TABLE deleted_tags (
	repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	name          TEXT    NOT NULL,
	digest        TEXT    NOT NULL,
	deleted_at    INTEGER NOT NULL,
	PRIMARY KEY (repository_id, name, digest)
);

-- Soft-deleted repositories, listed by the deleted catalog until purge.
CREATE TABLE deleted_repositories (
	name       TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	deleted_at INTEGER NOT NULL,
	PRIMARY KEY (name, deleted_at)
);

-- Durable operations. Workers claim one by taking its lease; a lease that
-- runs out (a crashed worker) lets another worker resume it.
CREATE TABLE operations (
	id               TEXT    PRIMARY KEY,
	kind             TEXT    NOT NULL,
	repository       TEXT    NOT NULL,
	digest           TEXT    NOT NULL,
	status           TEXT    NOT NULL,
	request          TEXT    NOT NULL DEFAULT '',
	progress_bytes   INTEGER NOT NULL DEFAULT 0,
	total_bytes      INTEGER NOT NULL DEFAULT 0,
	details          TEXT    NOT NULL DEFAULT '',
	error_code       TEXT    NOT NULL DEFAULT '',
	error_message    TEXT    NOT NULL DEFAULT '',
	result           TEXT    NOT NULL DEFAULT '',
	attempts         INTEGER NOT NULL DEFAULT 0,
	lease_owner      TEXT    NOT NULL DEFAULT '',
	lease_expires_at INTEGER NOT NULL DEFAULT 0,
	not_before       INTEGER NOT NULL DEFAULT 0,
	created_at       INTEGER NOT NULL,
	started_at       INTEGER NOT NULL DEFAULT 0,
	updated_at       INTEGER NOT NULL,
	finished_at      INTEGER NOT NULL DEFAULT 0
);
-- At most one active conversion per image.
CREATE UNIQUE INDEX operations_one_active ON operations(kind, repository, digest)
	WHERE status IN ('NotStarted', 'Running');
CREATE INDEX operations_queue ON operations(status, not_before, created_at)
	WHERE status IN ('NotStarted', 'Running');
CREATE INDEX operations_by_image ON operations(repository, digest);

-- Layers already converted, by source layer and format version, so that
-- layers shared between images are converted once.
CREATE TABLE converted_layers (
	source_digest  TEXT    NOT NULL,
	format_version TEXT    NOT NULL,
	digest         TEXT    NOT NULL,
	size           INTEGER NOT NULL,
	media_type     TEXT    NOT NULL,
	annotations    TEXT    NOT NULL,
	created_at     INTEGER NOT NULL,
	PRIMARY KEY (source_digest, format_version)
);
