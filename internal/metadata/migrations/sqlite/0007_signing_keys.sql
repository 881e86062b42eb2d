-- The registry's signing keys, when replicas on several machines share
-- them through the database instead of each keeping a key directory: the
-- private key (PEM), the endorsement by the key before it, and which one
-- signs now. Every key verifies and is published.
CREATE TABLE signing_keys (
	kid         TEXT    PRIMARY KEY,
	private_key TEXT    NOT NULL,
	endorsement TEXT    NOT NULL DEFAULT '',
	current     INTEGER NOT NULL DEFAULT 0,
	created_at  INTEGER NOT NULL
);
