-- A recipient's acknowledgement that a shared file arrived (`coffer inbox`),
-- kept per wrap so that another machine of the same user, or a wiped home
-- directory, does not fetch it again. NULL: not acknowledged.
ALTER TABLE wraps ADD COLUMN received_at INTEGER;
