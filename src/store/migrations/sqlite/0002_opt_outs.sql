-- Compliance: the current opt-out state per (number, customer), and every change with its keyword.
CREATE TABLE opt_outs (
    phone_number_id TEXT    NOT NULL,
    customer        TEXT    NOT NULL,
    opted_out       INTEGER NOT NULL,
    keyword         TEXT    NOT NULL,
    changed_at      INTEGER NOT NULL,
    PRIMARY KEY (phone_number_id, customer)
);

CREATE TABLE opt_out_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    phone_number_id TEXT    NOT NULL,
    customer        TEXT    NOT NULL,
    opted_out       INTEGER NOT NULL,
    keyword         TEXT    NOT NULL,
    wamid           TEXT    NOT NULL,
    at              INTEGER NOT NULL
);

-- History for agents: the turns of one conversation, newest first.
CREATE INDEX inbox_conversation ON inbox (phone_number_id, customer, id);
CREATE INDEX outbox_conversation ON outbox (phone_number_id, customer, id);

-- What an outbox row is: an agent's reply or a system text (the opt-out confirmation is the only
-- message that may go to a customer who opted out).
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'reply';
