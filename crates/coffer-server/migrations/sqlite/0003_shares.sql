-- Key wraps (coffer format stanzas) per file and user. A row is both the
-- wrap and the grant: revoking deletes it. The owner's own wrap lives here
-- too. The server cannot open any of them.
CREATE TABLE wraps (
    file_id    TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    user_name  TEXT NOT NULL REFERENCES users (name),
    stanza     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (file_id, user_name)
) STRICT;
CREATE INDEX wraps_user ON wraps (user_name);
