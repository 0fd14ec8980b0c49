-- A conversation's row is found, and upserted with every inbound message, by its key alone: a
-- table clustered on that key (WITHOUT ROWID) writes one B-tree page per message where a rowid
-- table and its key's index wrote two (a random page of each; issue 16's WAL attribution).
CREATE TABLE conversations_clustered (
    phone_number_id TEXT    NOT NULL,
    customer        TEXT    NOT NULL,
    wa_id           TEXT,
    user_id         TEXT,
    customer_name   TEXT,
    last_inbound_ts INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (phone_number_id, customer)
) WITHOUT ROWID;
INSERT INTO conversations_clustered (phone_number_id, customer, wa_id, user_id, customer_name,
    last_inbound_ts, updated_at)
SELECT phone_number_id, customer, wa_id, user_id, customer_name, last_inbound_ts, updated_at
FROM conversations;
DROP TABLE conversations;
ALTER TABLE conversations_clustered RENAME TO conversations;
