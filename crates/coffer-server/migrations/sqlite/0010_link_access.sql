-- SHA-256 of the access proof a link's URL secret yields (see
-- coffer_proto::link): without it a link cannot be looked at, opened or
-- locked by wrong passwords. NULL for links made before.
ALTER TABLE links ADD COLUMN access_hash BLOB;
