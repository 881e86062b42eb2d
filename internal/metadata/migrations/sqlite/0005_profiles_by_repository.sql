-- Startup profiles are kept per repository. A layer shared by several
-- repositories (a common base) starts different programs in each, so one
-- profile per layer flip-flopped between their starts; and a node that may
-- pull from one repository could replace the profile that nodes pulling
-- from another one use.

CREATE TABLE startup_profiles_by_repository (
	repository_id INTEGER NOT NULL,
	digest        TEXT    NOT NULL,
	ranges        TEXT    NOT NULL, -- JSON [[offset, length], ...]
	updated_at    INTEGER NOT NULL,
	PRIMARY KEY (repository_id, digest),
	-- A profile goes with the link of its blob to the repository (and so
	-- with the repository, and with the blob).
	FOREIGN KEY (repository_id, digest) REFERENCES repository_blobs(repository_id, digest) ON DELETE CASCADE
);

-- A profile recorded before goes to every repository that holds its blob.
INSERT INTO startup_profiles_by_repository(repository_id, digest, ranges, updated_at)
	SELECT rb.repository_id, p.digest, p.ranges, p.updated_at
	FROM startup_profiles p JOIN repository_blobs rb ON rb.digest = p.digest;

DROP TABLE startup_profiles;
ALTER TABLE startup_profiles_by_repository RENAME TO startup_profiles;
