-- Upload link passwords; see the SQLite migration 0014.
ALTER TABLE requests ADD COLUMN password_hash TEXT;
ALTER TABLE requests ADD COLUMN failed_attempts BIGINT NOT NULL DEFAULT 0;
