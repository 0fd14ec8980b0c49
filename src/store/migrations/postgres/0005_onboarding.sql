-- Secrets the gateway keeps itself (tokens from embedded signup), referenced from the config as
-- { stored: NAME }: AES-256-GCM ciphertext with its nonce, and the id of the key (never the key).
CREATE TABLE stored_secrets (
    name       TEXT    PRIMARY KEY,
    key_id     TEXT    NOT NULL,
    nonce      BYTEA   NOT NULL,
    ciphertext BYTEA   NOT NULL,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);

-- The last verification code request per number: the resend cooldown holds across the CLI, the
-- admin API and replicas.
CREATE TABLE verification_requests (
    phone_number_id TEXT    PRIMARY KEY,
    code_method     TEXT    NOT NULL,
    language        TEXT    NOT NULL,
    requested_at    BIGINT  NOT NULL
);
