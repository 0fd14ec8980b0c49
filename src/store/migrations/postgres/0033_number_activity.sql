-- When each number last received a customer message, in a row of its own, written by the group
-- commit that stores the messages. `inbox_number_received (phone_number_id, received_at)` answered
-- it before, at the cost of an index entry per message (about 8% of what SQLite wrote per message
-- at 2,000 a second: issue 16). The row also outlives retention and erasure, which delete the
-- messages but not the fact that the number was in use.
CREATE TABLE number_activity (
    phone_number_id  TEXT   PRIMARY KEY,
    last_received_at BIGINT NOT NULL
);
INSERT INTO number_activity (phone_number_id, last_received_at)
SELECT phone_number_id, MAX(received_at) FROM inbox GROUP BY phone_number_id;
DROP INDEX inbox_number_received;
