-- A conversation's messages are found by a chain instead of an index: each inbox row names the
-- conversation's message before it (`prev_id`), and the conversation's row names its newest
-- (`last_inbox_id`). `inbox_conversation` took a random page of its own for every message (a
-- fifth of the pages in the log, issue 16's WAL attribution); the chain's links are written in
-- the pages the message and its conversation's row take anyway. The history reads the chain
-- back from the message being answered. Existing rows are linked here, in id order per
-- conversation (with the index, before it goes).
ALTER TABLE inbox ADD COLUMN prev_id INTEGER;
ALTER TABLE conversations ADD COLUMN last_inbox_id INTEGER;
UPDATE inbox SET prev_id = links.prev_id
FROM (SELECT id, LAG(id) OVER (PARTITION BY phone_number_id, customer ORDER BY id) AS prev_id
      FROM inbox) AS links
WHERE inbox.id = links.id AND links.prev_id IS NOT NULL;
UPDATE conversations SET last_inbox_id = (SELECT MAX(i.id) FROM inbox i
    WHERE i.phone_number_id = conversations.phone_number_id AND i.customer = conversations.customer);
DROP INDEX inbox_conversation;
