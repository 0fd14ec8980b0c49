-- Media files the gateway uploaded to Meta for an agent's media `url`, by the SHA-256 of their
-- bytes, per number (a media id belongs to the number that uploaded it): the same bytes sent
-- again reuse the id instead of a second upload. Meta keeps an upload for 30 days; a row is
-- reused for `policies.media.cache_for` (under that) and then pruned by retention.
CREATE TABLE media_uploads (
    phone_number_id TEXT    NOT NULL,
    sha256          TEXT    NOT NULL,
    media_id        TEXT    NOT NULL,
    mime_type       TEXT    NOT NULL,
    uploaded_at     BIGINT  NOT NULL,
    PRIMARY KEY (phone_number_id, sha256)
);
CREATE INDEX media_uploads_uploaded ON media_uploads (uploaded_at);
