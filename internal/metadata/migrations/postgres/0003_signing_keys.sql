-- The registry's signing keys, shared by the replicas: see the SQLite
-- migration 0007.
CREATE TABLE signing_keys (
	kid         TEXT    PRIMARY KEY,
	private_key TEXT    NOT NULL,
	endorsement TEXT    NOT NULL DEFAULT '',
	current     INTEGER NOT NULL DEFAULT 0,
	created_at  BIGINT  NOT NULL
);
