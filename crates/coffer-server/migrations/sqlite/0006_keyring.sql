-- Envelope encryption at rest for uploads the server encrypts itself.
-- KEKs are sealed by the master key (never stored here); DEKs and staging
-- keys are stored only wrapped by a KEK version, never beside the objects.
CREATE TABLE keks (
    version    INTEGER PRIMARY KEY NOT NULL,
    sealed     BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

-- One row per server-encrypted file: its DEK wrapped under `kek_version`,
-- and the size of the stored (coffer format) object. E2EE files have none.
CREATE TABLE object_keys (
    file_id     TEXT PRIMARY KEY NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    kek_version INTEGER NOT NULL REFERENCES keks (version),
    wrapped     BLOB NOT NULL,
    stored_size INTEGER NOT NULL
) STRICT;
CREATE INDEX object_keys_kek ON object_keys (kek_version);

-- Unfinished server-encrypted uploads are staged as sealed records under a
-- staging key; `staged_len` is the staged file's length at `offset`.
ALTER TABLE uploads ADD COLUMN staged_len INTEGER NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN kek_version INTEGER REFERENCES keks (version);
ALTER TABLE uploads ADD COLUMN staging_key BLOB;
