-- The inbound wamids are indexed in sorted batches instead of with every message (issue 16's WAL
-- attribution: the unique index of `inbox.wamid` took a random page of the log for every
-- message, a third of the pages a commit wrote). `inbox_wamids` has the wamid of every inbox row
-- up to `inbox_wamids_merged.id`; the writer keeps the wamids of the rows after it in memory,
-- read back from those rows whenever it opens, and copies them into the index every few seconds
-- (`store::wamid_index`). The table is rebuilt to drop the column's UNIQUE; its ids, and the
-- AUTOINCREMENT mark that keeps them from being reused (the chain depends on it), stay.
CREATE TABLE inbox_rebuilt (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    wamid           TEXT    NOT NULL,
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
    handled_at      INTEGER,
    opt_action      TEXT,
    opt_keyword     TEXT,
    prev_id         INTEGER
);
INSERT INTO inbox_rebuilt (id, wamid, phone_number_id, customer, wa_id, user_id, customer_name,
    msg_type, text, payload, meta_ts, received_at, state, detail, handled_at, opt_action,
    opt_keyword, prev_id)
SELECT id, wamid, phone_number_id, customer, wa_id, user_id, customer_name, msg_type, text,
    payload, meta_ts, received_at, state, detail, handled_at, opt_action, opt_keyword, prev_id
FROM inbox ORDER BY id;
DELETE FROM sqlite_sequence WHERE name = 'inbox_rebuilt';
INSERT INTO sqlite_sequence (name, seq) SELECT 'inbox_rebuilt', seq FROM sqlite_sequence
WHERE name = 'inbox';
DROP TABLE inbox;
ALTER TABLE inbox_rebuilt RENAME TO inbox;
CREATE INDEX inbox_open ON inbox (id) WHERE state = 'received';

CREATE TABLE inbox_wamids (
    wamid TEXT    PRIMARY KEY,
    id    INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO inbox_wamids (wamid, id) SELECT wamid, id FROM inbox ORDER BY wamid;
-- The newest inbox row whose wamid `inbox_wamids` has.
CREATE TABLE inbox_wamids_merged (id INTEGER NOT NULL);
INSERT INTO inbox_wamids_merged (id) SELECT COALESCE(MAX(id), 0) FROM inbox;
-- A message deleted (retention, erasure) leaves the index too; its wamid is remembered by its
-- digest in `seen_wamids` instead.
CREATE TRIGGER inbox_wamid_forgotten AFTER DELETE ON inbox
BEGIN
    DELETE FROM inbox_wamids WHERE wamid = old.wamid AND id = old.id;
END;
