-- Templates: the root file systems capsules start from. Platform templates
-- (team_id = the all-zero platform team) are visible to every team; a team's
-- own templates (snapshots of its capsules) only to that team.

CREATE TABLE templates (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  -- No foreign key: the platform id owns built-in templates, and a deleted team's rows are removed with its files.
  team_id       uuid NOT NULL,
  name          text NOT NULL CHECK (name ~ '^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$' AND position('..' in name) = 0),
  type          text NOT NULL DEFAULT 'base' CHECK (type IN ('base', 'snapshot')),
  -- A snapshot's resources are baked in: capsules made from it get these.
  vcpus         integer NOT NULL DEFAULT 1 CHECK (vcpus > 0),
  memory_mb     integer NOT NULL DEFAULT 512 CHECK (memory_mb > 0),
  size_bytes    bigint NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
  -- Applied to every capsule made from the template ('' = the image's own default user).
  default_user  text NOT NULL DEFAULT '',
  default_env   jsonb NOT NULL DEFAULT '{}'::jsonb,
  metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
  -- The host holding the files of a snapshot (capsules of it are placed there); NULL = every host has it.
  host_id       uuid,
  created_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (team_id, name)
);
CREATE INDEX templates_team_idx ON templates (team_id);

-- The built-in template: its id and team are the all-zero sentinel (images/minimal on every host).
INSERT INTO templates (id, team_id, name, type, vcpus, memory_mb)
VALUES ('00000000-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000000', 'minimal', 'base', 1, 512);
