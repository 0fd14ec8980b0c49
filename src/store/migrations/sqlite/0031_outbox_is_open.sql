-- Whether a reply is still the gateway's to send (`pending` or `sending`), as a column of its own
-- that the partial index of open replies names, as on PostgreSQL (where a status that leaves it
-- unchanged then updates the row without writing its indexes). Computed when read.
ALTER TABLE outbox ADD COLUMN is_open INTEGER GENERATED ALWAYS AS (state IN ('pending', 'sending')) VIRTUAL;
DROP INDEX outbox_open;
CREATE INDEX outbox_open ON outbox (id) WHERE is_open;
