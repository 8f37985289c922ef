-- Flows: an execution's variables; per task run, the input rendered for
-- its step, what its successful attempt produced (for later steps'
-- templates) and why it failed without an attempt failing (a template).
ALTER TABLE executions ADD COLUMN variables TEXT NOT NULL DEFAULT '{}';
ALTER TABLE task_runs ADD COLUMN input TEXT;
ALTER TABLE task_runs ADD COLUMN output TEXT;
ALTER TABLE task_runs ADD COLUMN error TEXT;
