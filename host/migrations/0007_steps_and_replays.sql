-- The step a flow is at (JSON {name, description}), the execution a
-- replay replays, and the variables an execution started with (a replay
-- starts with them again).
ALTER TABLE executions ADD COLUMN current_step TEXT;
ALTER TABLE executions ADD COLUMN replay_of TEXT;
ALTER TABLE executions ADD COLUMN initial_variables TEXT;
