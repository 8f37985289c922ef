-- What an execution's attempts used, kept on the execution as each attempt
-- ends, so that analytics read one row per execution (no join per row).
ALTER TABLE executions ADD COLUMN attempts    INTEGER NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN fuel        INTEGER NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN memory_peak INTEGER NOT NULL DEFAULT 0;
