-- Conversation leases claimed, renewed and given back in the group commit (store/apply/leases.rs).
-- `seq` counts the commits that brought a conversation new messages, whoever committed them: a
-- holder that sees it move by more than its own commits knows another replica's messages wait,
-- and gives the lease back only at the `seq` it has read up to. `claimed_seq` is the `seq` at
-- which the holder took the lease, so the commit that claims it can tell so.
ALTER TABLE conversation_leases ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE conversation_leases ADD COLUMN claimed_seq BIGINT NOT NULL DEFAULT 0;

-- A conversation's waiting messages, read by its holder and counted when a commit claims it.
CREATE INDEX inbox_open_conversation ON inbox (phone_number_id, customer, id)
    WHERE state = 'received';

-- Each replica's liveness: a lease is live while its owner renews this row (every third of
-- `storage.lease`), or, as before, while its own `expires_at` has not passed. One small write per
-- replica renews every conversation it holds.
CREATE TABLE replicas (
    replica     TEXT   PRIMARY KEY,
    alive_until BIGINT NOT NULL
);
