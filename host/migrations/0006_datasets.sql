-- Datasets: the rows each successful execution of a task added, in order.
CREATE TABLE dataset_rows (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id      TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    row_index    INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    data         TEXT NOT NULL            -- JSON object
);
CREATE INDEX dataset_rows_by_task ON dataset_rows (task_id, id);
CREATE INDEX dataset_rows_by_execution ON dataset_rows (execution_id, id);
