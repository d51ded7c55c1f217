-- As migrations/sqlite/0008: the content digest and which algorithm made it.
ALTER TABLE files RENAME COLUMN sha256 TO digest;
ALTER TABLE files ADD COLUMN digest_alg TEXT NOT NULL DEFAULT 'sha256';
