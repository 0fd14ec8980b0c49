-- Opt-outs take effect when the keyword is committed: the inbox row keeps what it did (only a
-- keyword that changed the customer's state keeps it), and opt_outs when the customer last
-- opted out, so a reply queued before that moment is never sent, even after an opt-in.
ALTER TABLE inbox ADD COLUMN opt_action TEXT;
ALTER TABLE inbox ADD COLUMN opt_keyword TEXT;
ALTER TABLE opt_outs ADD COLUMN stopped_at BIGINT NOT NULL DEFAULT 0;
UPDATE opt_outs SET stopped_at = COALESCE((SELECT MAX(e.at) FROM opt_out_events e
    WHERE e.phone_number_id = opt_outs.phone_number_id AND e.customer = opt_outs.customer
      AND e.opted_out = 1), changed_at * opted_out);

-- This database's identity, sent in every biz_opaque_callback_data: a status webhook settles a
-- reply only if it names this installation (and the reply's number, recipient and queue time).
-- Replies queued before this migration carried only their id: they settle while their id is at
-- most legacy_outbox_max.
CREATE TABLE installation (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    installation_id   TEXT    NOT NULL,
    legacy_outbox_max BIGINT  NOT NULL,
    created_at        BIGINT  NOT NULL
);
INSERT INTO installation (id, installation_id, legacy_outbox_max, created_at)
SELECT 1, substr(md5(random()::text || clock_timestamp()::text), 1, 16),
       COALESCE((SELECT MAX(id) FROM outbox), 0),
       (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint;
