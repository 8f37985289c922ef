-- Schedules: the last tick each task's scheduler handled (a tick fires at
-- most once: its execution's idempotency key is the tick), and whether it
-- is paused; the tick a scheduled execution was made for.
CREATE TABLE schedules (
    task_id      TEXT PRIMARY KEY,
    last_tick_ms INTEGER NOT NULL,
    paused       INTEGER NOT NULL DEFAULT 0
);
ALTER TABLE executions ADD COLUMN scheduled_at TEXT;
