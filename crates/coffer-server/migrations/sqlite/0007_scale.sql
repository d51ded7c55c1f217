-- Several nodes: the upload offset column gets a name PostgreSQL does not
-- reserve; the object store's staging record (S3 multipart state) moves
-- with the offset; a lease says which node may write an upload.
ALTER TABLE uploads RENAME COLUMN offset TO upload_offset;
ALTER TABLE uploads ADD COLUMN staging BLOB NOT NULL DEFAULT x'';
ALTER TABLE uploads ADD COLUMN lease_holder TEXT;
ALTER TABLE uploads ADD COLUMN lease_until INTEGER;

-- Listings are paged by (created_at, id), newest first.
DROP INDEX files_owner;
CREATE INDEX files_owner ON files (owner, created_at DESC, id DESC);
