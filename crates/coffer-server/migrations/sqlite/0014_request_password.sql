-- An upload link may need a password (`coffer request --password`): its
-- Argon2id verifier, and the wrong attempts so far (the link locks for
-- good at `link_max_password_failures`).
ALTER TABLE requests ADD COLUMN password_hash TEXT;
ALTER TABLE requests ADD COLUMN failed_attempts INTEGER NOT NULL DEFAULT 0;
