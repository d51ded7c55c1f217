-- Retention: a file may expire (Unix time; NULL: never) and may be deleted
-- once every recipient acknowledged it (`put --delete-when-received`).
ALTER TABLE files ADD COLUMN expires_at INTEGER;
ALTER TABLE files ADD COLUMN delete_when_received INTEGER NOT NULL DEFAULT 0;
CREATE INDEX files_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;
