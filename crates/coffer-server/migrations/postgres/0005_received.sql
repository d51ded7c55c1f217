-- A recipient's acknowledgement that a shared file arrived (`coffer inbox`),
-- kept per wrap. NULL: not acknowledged.
ALTER TABLE wraps ADD COLUMN received_at BIGINT;
