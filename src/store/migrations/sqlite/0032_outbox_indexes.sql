-- A reply's indexes are written where its row is: no random page for a value that is read rarely
-- or not yet known (issue 16's WAL attribution). `outbox_conversation` took a random page of its
-- own for every reply; a conversation's replies are now found through the inbox rows they answer
-- (`outbox_reply_to`, written near its end, as replies answer recent messages), those that answer
-- none (the Business app's echoes, operators' sends) through a small index of their own, and
-- those still open through `outbox_open_conversation`, as on PostgreSQL. `outbox_wamid` holds
-- only the wamids Meta gave: a reply's entry is written once, when Meta accepts it, instead of a
-- NULL entry first and a move then.
DROP INDEX outbox_conversation;
CREATE INDEX outbox_open_conversation ON outbox (phone_number_id, customer, id) WHERE is_open;
CREATE INDEX outbox_reply_to ON outbox (inbox_id);
CREATE INDEX outbox_unprompted ON outbox (phone_number_id, customer, id) WHERE inbox_id IS NULL;
DROP INDEX outbox_wamid;
CREATE INDEX outbox_wamid ON outbox (wamid) WHERE wamid IS NOT NULL;
