-- Whether a reply is still the gateway's to send (`pending` or `sending`), as a column of its own
-- that the partial indexes of open replies name instead of `state`. PostgreSQL updates a row in
-- place (a heap-only tuple: no new entry in any index) only when no indexed column changes and
-- its page has room. With `state` in those indexes' predicates, every status Meta reported
-- (`delivered`, `read`) wrote a new entry into each of the table's indexes; now only the updates
-- that open or close a reply, or set its wamid, do. The fill factor leaves each page room for the
-- updated rows. Adding a stored column rewrites the table once.
ALTER TABLE outbox SET (fillfactor = 80);
ALTER TABLE outbox ADD COLUMN is_open BOOLEAN GENERATED ALWAYS AS (state IN ('pending', 'sending')) STORED;
DROP INDEX outbox_open;
CREATE INDEX outbox_open ON outbox (id) WHERE is_open;
DROP INDEX outbox_open_conversation;
CREATE INDEX outbox_open_conversation ON outbox (phone_number_id, customer, id) WHERE is_open;
