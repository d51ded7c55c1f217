-- Format v2: a file's content identity is the signed tree root of its
-- coffer v2 object (end-to-end encrypted uploads) or the BLAKE3 of what a
-- plain upload sent. The digest column keeps the 32 bytes, digest_alg says
-- which (files committed before this migration hold SHA-256).
ALTER TABLE files RENAME COLUMN sha256 TO digest;
ALTER TABLE files ADD COLUMN digest_alg TEXT NOT NULL DEFAULT 'sha256';
