-- Webhook request signatures seen, kept while their timestamp could still
-- pass (a replay of one is refused).
CREATE TABLE webhook_signatures (
    task_id   TEXT NOT NULL,
    signature TEXT NOT NULL,            -- hex HMAC-SHA256
    until_ms  INTEGER NOT NULL,         -- unix ms: forgotten after this
    PRIMARY KEY (task_id, signature)
);
CREATE INDEX webhook_signatures_by_time ON webhook_signatures (until_ms);
