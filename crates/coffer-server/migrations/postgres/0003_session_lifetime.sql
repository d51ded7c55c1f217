-- As migrations/sqlite/0009: when the session a token belongs to began.
ALTER TABLE tokens ADD COLUMN session_started BIGINT NOT NULL DEFAULT 0;
UPDATE tokens SET session_started = EXTRACT(EPOCH FROM now())::BIGINT;
