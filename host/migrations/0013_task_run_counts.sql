-- How many task runs each execution has, kept on the execution (as its
-- attempts are) so that analytics read one row per execution without
-- counting task runs for each.
ALTER TABLE executions ADD COLUMN task_runs INTEGER NOT NULL DEFAULT 0;
UPDATE executions SET task_runs = (SELECT COUNT(*) FROM task_runs t WHERE t.execution_id = executions.id);
CREATE TRIGGER task_runs_counted AFTER INSERT ON task_runs
BEGIN
    UPDATE executions SET task_runs = task_runs + 1 WHERE id = NEW.execution_id;
END;
