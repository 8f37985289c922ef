-- Ward's schema. Times are RFC 3339 text (sortable); not_before and leases are unix milliseconds.

CREATE TABLE plugins (
    digest     TEXT PRIMARY KEY,            -- hex sha256 of the component
    name       TEXT NOT NULL,
    version    TEXT,
    size       INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX plugins_by_name ON plugins (name, created_at);

CREATE TABLE tasks (
    id         TEXT PRIMARY KEY,
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    spec       TEXT NOT NULL,               -- JSON TaskSpec of the current version
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX tasks_by_name ON tasks (namespace, name) WHERE deleted = 0;

CREATE TABLE task_versions (
    task_id    TEXT NOT NULL,
    version    INTEGER NOT NULL,
    spec       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (task_id, version)
);

CREATE TABLE executions (
    id              TEXT PRIMARY KEY,       -- UUID v7: ordered by creation
    task_id         TEXT NOT NULL,
    task_version    INTEGER NOT NULL,
    namespace       TEXT NOT NULL,
    parent_id       TEXT,
    trigger         TEXT NOT NULL,
    input           TEXT NOT NULL,
    state           TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    ended_at        TEXT,
    duration_ms     REAL,
    outputs         TEXT NOT NULL DEFAULT '{}',
    result          TEXT,
    error           TEXT,
    labels          TEXT NOT NULL DEFAULT '{}',
    idempotency_key TEXT
);
CREATE UNIQUE INDEX executions_by_idempotency ON executions (task_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX executions_by_state ON executions (state, id);
CREATE INDEX executions_by_task ON executions (task_id, id);
CREATE INDEX executions_by_created ON executions (created_at);

CREATE TABLE task_runs (
    id           TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    step         TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0, -- attempts started so far
    max_attempts INTEGER NOT NULL,
    queue        TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    not_before   INTEGER,                    -- unix ms: the next attempt's earliest start
    checkpoint   TEXT,
    owner        TEXT,                       -- host running it
    lease_until  INTEGER,                    -- unix ms; renewed while running
    fence        INTEGER NOT NULL DEFAULT 0  -- bumped at each start; a completion must match
);
-- Runnable work only: finished task runs never enter this index.
CREATE INDEX task_runs_runnable ON task_runs (priority DESC, id) WHERE state IN ('CREATED', 'RETRYING');
CREATE INDEX task_runs_running ON task_runs (owner) WHERE state = 'RUNNING';
CREATE INDEX task_runs_by_execution ON task_runs (execution_id);

CREATE TABLE attempts (
    id           TEXT PRIMARY KEY,
    task_run_id  TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    number       INTEGER NOT NULL,
    status       TEXT NOT NULL,              -- running, success, warning, failed, killed
    error        TEXT,                       -- JSON {kind, message}
    usage        TEXT,                       -- JSON
    report       TEXT,                       -- JSON: result, outputs, metrics, media, warnings, checkpoint
    worker_id    TEXT NOT NULL,
    fence        INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    ended_at     TEXT
);
CREATE INDEX attempts_by_task_run ON attempts (task_run_id, number);
CREATE INDEX attempts_by_execution ON attempts (execution_id);
CREATE INDEX attempts_running ON attempts (worker_id) WHERE status = 'running';

CREATE TABLE logs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    ts           TEXT NOT NULL,
    level        TEXT NOT NULL,
    source       TEXT NOT NULL,
    message      TEXT NOT NULL
);
CREATE INDEX logs_by_execution ON logs (execution_id, id);

CREATE TABLE events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    ts           TEXT NOT NULL,
    kind         TEXT NOT NULL,
    from_state   TEXT,
    to_state     TEXT,
    detail       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_execution ON events (execution_id, id);

CREATE TABLE media (
    id           TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    attempt_id   TEXT NOT NULL,
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    url          TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX media_by_execution ON media (execution_id);
