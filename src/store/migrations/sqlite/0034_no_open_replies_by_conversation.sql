-- A conversation's open replies are read by conversation only when a replica takes a lease over
-- from another (PostgreSQL, several replicas). One process never does: the index took a random
-- page for every reply queued, and again when Meta settled it (a backlog of open replies spreads
-- it over many pages: a tenth of the pages in the log with the cores saturated). The queued-replies
-- gauge counts them through `outbox_open`.
DROP INDEX outbox_open_conversation;
