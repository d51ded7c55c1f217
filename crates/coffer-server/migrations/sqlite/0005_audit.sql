-- Append-only, hash-chained audit log. `seq` is assigned by the appender as
-- previous + 1 and is the primary key, so two writers racing to append can
-- never fork the chain: one insert fails and retries on the new head.
-- `hash` = SHA-256 over a domain label, `prev_hash` and every other column
-- (docs/API.md, "Audit log"). Nothing secret is ever written here.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY NOT NULL,
    time       INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    ip         TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    detail     TEXT NOT NULL,
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL
) STRICT;

-- Heads of the chain signed by the server's identity, so that rewriting the
-- chain (even with recomputed hashes) or cutting off its tail is detected.
CREATE TABLE audit_checkpoints (
    seq        INTEGER PRIMARY KEY NOT NULL,
    hash       BLOB NOT NULL,
    time       INTEGER NOT NULL,
    signature  BLOB NOT NULL
) STRICT;
