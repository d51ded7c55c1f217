-- As migrations/sqlite/0010: SHA-256 of the link's access proof.
ALTER TABLE links ADD COLUMN access_hash BYTEA;
