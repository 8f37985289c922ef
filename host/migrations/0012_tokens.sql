-- API tokens: the secret is never stored, only its sha256 (hex).
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    name       TEXT,
    namespace  TEXT,                       -- NULL: an admin token (every namespace)
    scopes     TEXT NOT NULL,              -- JSON array of scope names
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);

-- The audit trail: every control request, upload and change, with the
-- token that made it.
CREATE TABLE audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts        TEXT NOT NULL,
    token_id  TEXT,                        -- NULL: a server run with --no-auth
    namespace TEXT,
    action    TEXT NOT NULL,               -- e.g. execution.cancel, plugin.upload
    method    TEXT NOT NULL,
    path      TEXT NOT NULL,
    status    INTEGER NOT NULL,
    object    TEXT                         -- the id or name acted on
);
CREATE INDEX audit_by_namespace ON audit (namespace, id);

-- Plugins belong to a namespace; a name and version are unique within it.
ALTER TABLE plugins ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
DROP INDEX plugins_by_name_version;
DROP INDEX plugins_by_name;
CREATE UNIQUE INDEX plugins_by_name_version ON plugins (namespace, name, IFNULL(version, ''), digest);
CREATE INDEX plugins_by_name ON plugins (namespace, name, created_at);

-- Fair shares, set by an admin; NULL: no limit of that kind.
CREATE TABLE namespace_limits (
    namespace           TEXT PRIMARY KEY,
    running             INTEGER,
    triggers_per_second REAL,
    burst               INTEGER,
    stored_bytes        INTEGER
);
