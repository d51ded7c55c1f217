-- Uploads in progress (tus). The offset here is authoritative: staged bytes
-- beyond it (from a crash between write and update) are discarded.
CREATE TABLE uploads (
    id          TEXT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL REFERENCES users (name),
    length      INTEGER NOT NULL,
    offset      INTEGER NOT NULL DEFAULT 0,
    metadata    TEXT NOT NULL DEFAULT '',
    expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX uploads_expiry ON uploads (expires_at);

-- Committed files. A row exists only once the object is durably in place.
CREATE TABLE files (
    id          TEXT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL REFERENCES users (name),
    size        INTEGER NOT NULL,
    sha256      BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    receipt     TEXT NOT NULL
) STRICT;
CREATE INDEX files_owner ON files (owner);
