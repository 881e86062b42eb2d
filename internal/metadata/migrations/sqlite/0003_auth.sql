-- Identities: the admin user, tokens with two passwords each, and the scope
-- maps that say what a token may do. Passwords are stored only as bcrypt
-- hashes.

CREATE TABLE users (
	name          TEXT    PRIMARY KEY,
	password_hash TEXT    NOT NULL,
	created_at    INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL
);

CREATE TABLE scope_maps (
	name        TEXT    PRIMARY KEY,
	description TEXT    NOT NULL DEFAULT '',
	-- JSON array of actions like "repositories/team-a/*/content/read".
	actions     TEXT    NOT NULL,
	builtin     INTEGER NOT NULL DEFAULT 0,
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL
);

CREATE TABLE tokens (
	name       TEXT    PRIMARY KEY,
	scope_map  TEXT    NOT NULL REFERENCES scope_maps(name),
	enabled    INTEGER NOT NULL DEFAULT 1,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
);

CREATE TABLE token_passwords (
	token         TEXT    NOT NULL REFERENCES tokens(name) ON DELETE CASCADE,
	name          TEXT    NOT NULL,
	password_hash TEXT    NOT NULL,
	created_at    INTEGER NOT NULL,
	expires_at    INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (token, name)
);
