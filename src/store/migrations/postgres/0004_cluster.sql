-- Several replicas on one database. Times in these tables are the database's clock, in
-- milliseconds (leases, leader runs) or microseconds (send limits), so replicas whose clocks
-- disagree still agree on them.

-- Which replica works on a conversation: it alone runs its turns and sends its replies, in
-- order. A lease not renewed before `expires_at` may be taken over by another replica.
CREATE TABLE conversation_leases (
    phone_number_id TEXT   NOT NULL,
    customer        TEXT   NOT NULL,
    owner           TEXT   NOT NULL,
    expires_at      BIGINT NOT NULL,
    PRIMARY KEY (phone_number_id, customer)
);
CREATE INDEX conversation_leases_owner ON conversation_leases (owner);

-- Cluster-wide send limits (GCRA): per key, the theoretical arrival time of the next message.
CREATE TABLE send_limits (
    key TEXT   PRIMARY KEY,
    tat BIGINT NOT NULL
);

-- Every cycle of a leader-only task (start and end), so overlaps between replicas are visible.
CREATE TABLE leader_runs (
    id         BIGSERIAL PRIMARY KEY,
    replica    TEXT   NOT NULL,
    task       TEXT   NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT
);
CREATE INDEX leader_runs_started ON leader_runs (started_at);

-- Open outbox rows of one conversation, found when a replica takes it over.
CREATE INDEX outbox_open_conversation ON outbox (phone_number_id, customer, id)
    WHERE state IN ('pending', 'sending');
