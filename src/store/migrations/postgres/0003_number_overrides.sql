-- Operator overrides per number, set from the admin API: a disconnected number is not answered
-- (its messages are stored and skipped) until it is connected again; survives restarts.
CREATE TABLE number_overrides (
    phone_number_id TEXT    PRIMARY KEY,
    disconnected    BIGINT  NOT NULL,
    changed_at      BIGINT  NOT NULL,
    reason          TEXT
);

-- The status page's "last activity": the latest message per number without scanning the inbox.
CREATE INDEX inbox_number_received ON inbox (phone_number_id, received_at);
