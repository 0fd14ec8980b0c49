-- A reply's indexes are written where its row is (see SQLite's 0032): a conversation's replies
-- are found through the inbox rows they answer (`outbox_reply_to`), those that answer none
-- through a small index of their own, and those still open through `outbox_open_conversation`.
-- `outbox_wamid` holds only the wamids Meta gave.
DROP INDEX outbox_conversation;
CREATE INDEX outbox_reply_to ON outbox (inbox_id);
CREATE INDEX outbox_unprompted ON outbox (phone_number_id, customer, id) WHERE inbox_id IS NULL;
DROP INDEX outbox_wamid;
CREATE INDEX outbox_wamid ON outbox (wamid) WHERE wamid IS NOT NULL;
