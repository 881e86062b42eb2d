-- Registry core: repositories, content-addressed blobs and their links to
-- repositories, manifests with the references they hold, tags, the referrers
-- index (manifests by subject) and resumable uploads.
-- Times are Unix nanoseconds.

CREATE TABLE repositories (
	id         INTEGER PRIMARY KEY,
	name       TEXT    NOT NULL UNIQUE,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
);

-- One row per stored blob. A row is written ("touched") before its object is
-- written, so every object in the blob store has a row; garbage collection
-- marks a row deleting (state 1) before it removes the object.
CREATE TABLE blobs (
	digest     TEXT    PRIMARY KEY,
	size       INTEGER NOT NULL DEFAULT -1,
	state      INTEGER NOT NULL DEFAULT 0,
	touched_at INTEGER NOT NULL
);

-- A blob is visible in a repository only through a link.
CREATE TABLE repository_blobs (
	repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	digest        TEXT    NOT NULL REFERENCES blobs(digest),
	created_at    INTEGER NOT NULL,
	PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_by_digest ON repository_blobs(digest);

CREATE TABLE manifests (
	repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	digest        TEXT    NOT NULL,
	media_type    TEXT    NOT NULL,
	artifact_type TEXT    NOT NULL DEFAULT '',
	size          INTEGER NOT NULL,
	payload       BLOB    NOT NULL,
	subject       TEXT,
	annotations   TEXT,
	created_at    INTEGER NOT NULL,
	PRIMARY KEY (repository_id, digest)
);
-- The referrers index: kept at write time, read with one range scan.
CREATE INDEX manifests_by_subject ON manifests(repository_id, subject) WHERE subject IS NOT NULL;

-- What each manifest references: blobs (kind 0) and child manifests (kind 1).
CREATE TABLE manifest_references (
	repository_id   INTEGER NOT NULL,
	manifest_digest TEXT    NOT NULL,
	child_digest    TEXT    NOT NULL,
	kind            INTEGER NOT NULL,
	PRIMARY KEY (repository_id, manifest_digest, child_digest),
	FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_references_by_child ON manifest_references(repository_id, child_digest);

CREATE TABLE tags (
	repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	name          TEXT    NOT NULL,
	digest        TEXT    NOT NULL,
	updated_at    INTEGER NOT NULL,
	PRIMARY KEY (repository_id, name),
	FOREIGN KEY (repository_id, digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX tags_by_digest ON tags(repository_id, digest);

-- Upload sessions: the parts written so far (JSON) and the resumable hash
-- state, so that any process can take the next chunk or finish the upload.
CREATE TABLE uploads (
	id         TEXT    PRIMARY KEY,
	repository TEXT    NOT NULL,
	algorithm  TEXT    NOT NULL,
	hash_state BLOB    NOT NULL,
	size       INTEGER NOT NULL,
	parts      TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
);
CREATE INDEX uploads_by_age ON uploads(updated_at);
