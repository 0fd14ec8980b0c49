-- The audit log: who (the admin token's name, `cli`, or the gateway itself) did what, when, and
-- how it ended. Every admin action, state-changing CLI action, reconciler apply and reload adds
-- a row; none holds a secret value. Pruned by `storage.retention.audit`.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT,
    outcome TEXT    NOT NULL,
    detail  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
