-- What the host agent reports about a capsule (runtime, versions), kept apart
-- from `metadata`, which holds the user's own key/value labels.
ALTER TABLE sandboxes ADD COLUMN agent_metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
