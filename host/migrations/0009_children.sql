-- GET /executions?parent_id=: an execution's children, newest first.
CREATE INDEX executions_by_parent ON executions (parent_id, id) WHERE parent_id IS NOT NULL;
