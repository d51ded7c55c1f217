-- Upload links (file requests, `coffer request`): anyone holding the URL may
-- upload files, end-to-end encrypted in their browser to the owner's key,
-- until the link expires or has taken `max_files` uploads. `access_hash` is
-- the SHA-256 of the access proof derived from the URL secret (see
-- coffer_proto::request); `files_started` counts uploads begun through it.
CREATE TABLE requests (
    id             TEXT PRIMARY KEY NOT NULL,
    owner          TEXT NOT NULL REFERENCES users (name),
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    max_files      INTEGER,
    max_file_bytes INTEGER,
    files_started  INTEGER NOT NULL DEFAULT 0,
    ask_name       INTEGER NOT NULL DEFAULT 0,
    access_hash    BLOB NOT NULL
) STRICT;
CREATE INDEX requests_owner ON requests (owner);
-- The upload link an upload, and then its file, came through (NULL: the
-- owner uploaded it). Such a file is its link owner's, signed by a one-time
-- key of the anonymous sender, and listed in the owner's inbox.
ALTER TABLE uploads ADD COLUMN via_request TEXT;
ALTER TABLE files ADD COLUMN via_request TEXT;
