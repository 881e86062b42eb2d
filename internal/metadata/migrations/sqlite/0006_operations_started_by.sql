-- Who started an operation: the admin user or token that asked for it, or
-- what started it on its own ("auto-streaming" for an image pushed to or
-- restored in a streaming repository). Operations recorded before this
-- column existed have no name.
ALTER TABLE operations ADD COLUMN started_by TEXT NOT NULL DEFAULT '';

-- Listings of operations, newest first: of the registry, and of a
-- repository.
CREATE INDEX operations_by_time ON operations(created_at, id);
CREATE INDEX operations_by_repository ON operations(repository, created_at, id);
