-- Human handoff: a conversation (number, customer) paused by an operator, an agent or the
-- Business app gets no agent turn until paused_until (ms) passes or it is resumed (the row is
-- deleted). One row per conversation: pausing again replaces it.
CREATE TABLE paused_conversations (
    phone_number_id TEXT    NOT NULL,
    customer        TEXT    NOT NULL,
    paused_at       BIGINT  NOT NULL,
    paused_until    BIGINT  NOT NULL,
    reason          TEXT,
    paused_by       TEXT    NOT NULL,
    PRIMARY KEY (phone_number_id, customer)
);
CREATE INDEX paused_conversations_until ON paused_conversations (paused_until);

-- Every pause queues one signed POST to policies.handoff.notify, in the pause's transaction,
-- sent (and retried with backoff) by the leader until it is accepted or out of attempts.
CREATE TABLE handoff_notifications (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    phone_number_id TEXT    NOT NULL,
    customer        TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);
CREATE INDEX handoff_notifications_due ON handoff_notifications (state, next_attempt_at);
