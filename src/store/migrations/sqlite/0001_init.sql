-- Inbound messages as Meta delivered them; wamid is the deduplication key.
CREATE TABLE inbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    wamid           TEXT    NOT NULL UNIQUE,
    phone_number_id TEXT    NOT NULL,
    customer        TEXT    NOT NULL,
    wa_id           TEXT,
    user_id         TEXT,
    customer_name   TEXT,
    msg_type        TEXT    NOT NULL,
    text            TEXT,
    payload         TEXT    NOT NULL,
    meta_ts         INTEGER NOT NULL,
    received_at     INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    detail          TEXT,
    handled_at      INTEGER
);
CREATE INDEX inbox_open ON inbox (id) WHERE state = 'received';

-- Replies; id is sent as biz_opaque_callback_data so status webhooks can settle a row.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    inbox_id        INTEGER,
    phone_number_id TEXT    NOT NULL,
    customer        TEXT    NOT NULL,
    recipient       TEXT    NOT NULL,
    recipient_kind  TEXT    NOT NULL,
    part            INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    state_rank      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    wamid           TEXT,
    error_code      INTEGER,
    error_message   TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    sending_since   INTEGER
);
CREATE INDEX outbox_open ON outbox (id) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_wamid ON outbox (wamid);

-- One row per (number, customer): identities and the last inbound time (the 24-hour window).
CREATE TABLE conversations (
    phone_number_id TEXT    NOT NULL,
    customer        TEXT    NOT NULL,
    wa_id           TEXT,
    user_id         TEXT,
    customer_name   TEXT,
    last_inbound_ts INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (phone_number_id, customer)
);

-- Correctly signed bodies that are not a valid envelope: answered 200 so Meta stops retrying.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    body        TEXT    NOT NULL
);

-- Every status webhook, as received (statuses arrive out of order and more than once).
CREATE TABLE status_events (
    id                       INTEGER PRIMARY KEY AUTOINCREMENT,
    wamid                    TEXT    NOT NULL,
    status                   TEXT    NOT NULL,
    meta_ts                  INTEGER NOT NULL,
    biz_opaque_callback_data TEXT,
    error_code               INTEGER,
    error_title              TEXT,
    received_at              INTEGER NOT NULL
);
