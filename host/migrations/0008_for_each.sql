-- A for_each step's task runs, one per item: the item's index and value.
ALTER TABLE task_runs ADD COLUMN item_index INTEGER;
ALTER TABLE task_runs ADD COLUMN item TEXT;
