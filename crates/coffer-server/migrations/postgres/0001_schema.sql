-- The PostgreSQL schema: the same tables as migrations/sqlite 0001-0007
-- (see the comments there for what each holds), in one step. Integers are
-- BIGINT so both backends decode the same Rust types; names sort byte-wise
-- (COLLATE "C") as they do in SQLite, whatever the database's locale.

CREATE TABLE users (
    name            TEXT COLLATE "C" PRIMARY KEY,
    public_identity TEXT NOT NULL,
    is_admin        BIGINT NOT NULL DEFAULT 0,
    quota_bytes     BIGINT,
    disabled        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL
);

CREATE TABLE challenges (
    nonce      BYTEA PRIMARY KEY,
    user_name  TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX challenges_expiry ON challenges (expires_at);

CREATE TABLE tokens (
    token_hash BYTEA PRIMARY KEY,
    user_name  TEXT COLLATE "C" NOT NULL REFERENCES users (name),
    expires_at BIGINT NOT NULL
);
CREATE INDEX tokens_expiry ON tokens (expires_at);

CREATE TABLE keks (
    version    BIGINT PRIMARY KEY,
    sealed     BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE uploads (
    id            TEXT COLLATE "C" PRIMARY KEY,
    owner         TEXT COLLATE "C" NOT NULL REFERENCES users (name),
    length        BIGINT NOT NULL,
    upload_offset BIGINT NOT NULL DEFAULT 0,
    metadata      TEXT NOT NULL DEFAULT '',
    expires_at    BIGINT NOT NULL,
    staged_len    BIGINT NOT NULL DEFAULT 0,
    kek_version   BIGINT REFERENCES keks (version),
    staging_key   BYTEA,
    staging       BYTEA NOT NULL DEFAULT '\x',
    lease_holder  TEXT,
    lease_until   BIGINT
);
CREATE INDEX uploads_expiry ON uploads (expires_at);
CREATE INDEX uploads_owner ON uploads (owner);

CREATE TABLE files (
    id          TEXT COLLATE "C" PRIMARY KEY,
    owner       TEXT COLLATE "C" NOT NULL REFERENCES users (name),
    size        BIGINT NOT NULL,
    sha256      BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    receipt     TEXT NOT NULL
);
CREATE INDEX files_owner ON files (owner, created_at DESC, id DESC);

CREATE TABLE wraps (
    file_id    TEXT COLLATE "C" NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    user_name  TEXT COLLATE "C" NOT NULL REFERENCES users (name),
    stanza     BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (file_id, user_name)
);
CREATE INDEX wraps_user ON wraps (user_name);

CREATE TABLE links (
    id              TEXT COLLATE "C" PRIMARY KEY,
    file_id         TEXT COLLATE "C" NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    stanza          BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    max_downloads   BIGINT,
    downloads       BIGINT NOT NULL DEFAULT 0,
    password_hash   TEXT,
    client_salt     BYTEA,
    failed_attempts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX links_file ON links (file_id);
CREATE INDEX links_expiry ON links (expires_at);

CREATE TABLE link_tickets (
    ticket_hash BYTEA PRIMARY KEY,
    link_id     TEXT COLLATE "C" NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX link_tickets_link ON link_tickets (link_id);

CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    time       BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    ip         TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    detail     TEXT NOT NULL,
    prev_hash  BYTEA NOT NULL,
    hash       BYTEA NOT NULL
);

CREATE TABLE audit_checkpoints (
    seq        BIGINT PRIMARY KEY,
    hash       BYTEA NOT NULL,
    time       BIGINT NOT NULL,
    signature  BYTEA NOT NULL
);

CREATE TABLE object_keys (
    file_id     TEXT COLLATE "C" PRIMARY KEY REFERENCES files (id) ON DELETE CASCADE,
    kek_version BIGINT NOT NULL REFERENCES keks (version),
    wrapped     BYTEA NOT NULL,
    stored_size BIGINT NOT NULL
);
CREATE INDEX object_keys_kek ON object_keys (kek_version);
