-- Only the Business app's echoes are found by their wamid (issue 16's WAL attribution). The
-- gateway's own replies carry their row's id as callback data, which Meta returns in every status
-- webhook: no status needs their wamids, and an index of them took a random page of the log for
-- every reply Meta accepted (a quarter of the pages a commit wrote). A status without callback
-- data names an echo (a person's send from the app); an echo of one of the gateway's own replies
-- is recognised through its conversation's recent messages instead (`INSERT_ECHO_SQLITE`).
DROP INDEX outbox_wamid;
CREATE INDEX outbox_echo_wamid ON outbox (wamid) WHERE kind = 'business_app';
