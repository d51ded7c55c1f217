-- Upload links (file requests); see the SQLite migration 0013 for the why.
CREATE TABLE requests (
    id             TEXT COLLATE "C" PRIMARY KEY,
    owner          TEXT COLLATE "C" NOT NULL REFERENCES users (name),
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    max_files      BIGINT,
    max_file_bytes BIGINT,
    files_started  BIGINT NOT NULL DEFAULT 0,
    ask_name       BIGINT NOT NULL DEFAULT 0,
    access_hash    BYTEA NOT NULL
);
CREATE INDEX requests_owner ON requests (owner);
ALTER TABLE uploads ADD COLUMN via_request TEXT COLLATE "C";
ALTER TABLE files ADD COLUMN via_request TEXT COLLATE "C";
