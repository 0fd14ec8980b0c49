-- Inbound messages deleted by retention or erasure leave their id here for
-- `storage.retention.dedupe`, so that Meta's redelivery of one (up to 7 days later) is still
-- recognised. Kept as a digest (the first 16 bytes of SHA-256, hex), not as the wamid: a wamid
-- encodes the customer's phone number.
CREATE TABLE seen_wamids (
    wamid_hash  TEXT    PRIMARY KEY,
    received_at BIGINT  NOT NULL
);
CREATE INDEX seen_wamids_received ON seen_wamids (received_at);
