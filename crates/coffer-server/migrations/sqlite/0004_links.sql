-- Anonymous share links. The stanza is a key wrap for a key derived from a
-- secret that lives only in the link's URL fragment (and, with a password,
-- from the password too), so the server holding this row cannot open the
-- file. `password_hash` is an Argon2id PHC string of what the client sends
-- as the password; `client_salt` is opaque to the server and handed back to
-- whoever opens the link so their client can derive the same key.
CREATE TABLE links (
    id              TEXT PRIMARY KEY NOT NULL,
    file_id         TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    stanza          BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    max_downloads   INTEGER,
    downloads       INTEGER NOT NULL DEFAULT 0,
    password_hash   TEXT,
    client_salt     BLOB,
    failed_attempts INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX links_file ON links (file_id);
CREATE INDEX links_expiry ON links (expires_at);

-- Opening a link spends one download and yields a ticket (stored hashed)
-- with which the bytes can be fetched, with ranges and resumption, until the
-- ticket expires. Deleting the link kills its tickets.
CREATE TABLE link_tickets (
    ticket_hash BLOB PRIMARY KEY NOT NULL,
    link_id     TEXT NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX link_tickets_link ON link_tickets (link_id);
