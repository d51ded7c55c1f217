-- Users, single-use login challenges and session tokens.
CREATE TABLE users (
    name            TEXT PRIMARY KEY NOT NULL,
    public_identity TEXT NOT NULL,
    is_admin        INTEGER NOT NULL DEFAULT 0,
    quota_bytes     INTEGER,
    disabled        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
) STRICT;

-- A nonce is deleted when it is used, successfully or not.
CREATE TABLE challenges (
    nonce      BLOB PRIMARY KEY NOT NULL,
    user_name  TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX challenges_expiry ON challenges (expires_at);

-- Only the SHA-256 of a token is stored.
CREATE TABLE tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    user_name  TEXT NOT NULL REFERENCES users (name),
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX tokens_expiry ON tokens (expires_at);
