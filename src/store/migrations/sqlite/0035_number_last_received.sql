-- When each number last received a customer's message, for its gauge and the admin API: one row
-- per number, upserted once per commit that brings the number messages, instead of an index of
-- every message by number (`inbox_number_received`, an entry per message). A number's time no
-- longer falls back when retention deletes its old messages. PostgreSQL keeps the index: there
-- every replica's commit would wait on the number's row.
CREATE TABLE number_last_received (
    phone_number_id TEXT    PRIMARY KEY,
    received_at     INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO number_last_received (phone_number_id, received_at)
SELECT phone_number_id, MAX(received_at) FROM inbox GROUP BY phone_number_id;
DROP INDEX inbox_number_received;
