-- Startup profiles: for a streamed layer blob, the byte ranges of the
-- chunks containers read first, in the order they first read them. Nodes
-- record them and nodes mounting the layer later prefetch them. A profile
-- goes with its blob.

CREATE TABLE startup_profiles (
	digest     TEXT    PRIMARY KEY REFERENCES blobs(digest) ON DELETE CASCADE,
	ranges     TEXT    NOT NULL, -- JSON [[offset, length], ...]
	updated_at INTEGER NOT NULL
);
