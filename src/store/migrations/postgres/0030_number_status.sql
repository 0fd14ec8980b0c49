-- Each declared number's status at Meta (status, reason, since when, quality and names), as the
-- leader's control loop last derived it, or as a send Meta refused with 190 showed it. One row
-- per number, written only when something in it changes; every replica reads the rows newer
-- than the last it has seen (`seq`), so all replicas serve the same status.
CREATE SEQUENCE number_status_seq;
CREATE TABLE number_status (
    phone_number_id      TEXT    PRIMARY KEY,
    status               TEXT    NOT NULL,
    reason               TEXT,
    -- The WABA's own problem (e.g. a read that failed with every token of the WABA), shown on
    -- its numbers without being charged to them.
    waba_problem         TEXT,
    -- Unix seconds since the number has had this status.
    since                BIGINT  NOT NULL,
    verified_name        TEXT,
    display_phone_number TEXT,
    quality_rating       TEXT,
    -- When the observation behind the row was made (ms since the epoch): an older observation
    -- never overwrites a newer one (a pass that read before a send was refused with 190).
    checked_at           BIGINT  NOT NULL,
    -- The order of writes; writers lock the table, so it is also the order of commits.
    seq                  BIGINT  NOT NULL DEFAULT nextval('number_status_seq')
);
CREATE INDEX number_status_by_seq ON number_status (seq);
