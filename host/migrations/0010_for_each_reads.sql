-- A for_each step's items as rendered when the step started: the items
-- started later are read from here, not rendered again at every event.
CREATE TABLE flow_items (
    execution_id TEXT NOT NULL,
    step TEXT NOT NULL,
    idx INTEGER NOT NULL,
    item TEXT NOT NULL,
    -- How many items the step has (the same in each of its rows).
    total INTEGER NOT NULL,
    PRIMARY KEY (execution_id, step, idx)
) WITHOUT ROWID;
-- What an item's events read of its execution: the task runs that are not
-- for_each items (first in the by-execution index, which now holds the
-- item index too), the items not succeeded (a small index: items leave it
-- as they succeed; those waiting or running are counted from it alone),
-- and a step's latest item. Task runs that are not items
-- are in none but the first, whose keys a state change does not touch.
DROP INDEX task_runs_by_execution;
CREATE INDEX task_runs_by_execution ON task_runs (execution_id, item_index);
CREATE INDEX task_runs_items_left ON task_runs (execution_id, state, item_index) WHERE item_index IS NOT NULL AND state != 'SUCCESS';
CREATE INDEX task_runs_items ON task_runs (execution_id, step, item_index) WHERE item_index IS NOT NULL;
