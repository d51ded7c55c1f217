-- When the session a token belongs to began: refreshes keep it, so a session
-- ends at session_max_secs however often it is refreshed. Tokens from before
-- this migration count from now.
ALTER TABLE tokens ADD COLUMN session_started INTEGER NOT NULL DEFAULT 0;
UPDATE tokens SET session_started = unixepoch();
