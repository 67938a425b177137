-- Template builds: platform templates made by running a recipe in a build
-- capsule (admin only). A row is the whole state of a build, so any control
-- plane can list, cancel or clean up after any build.

CREATE TABLE template_builds (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name           text NOT NULL CHECK (name ~ '^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$' AND position('..' in name) = 0),
  base_template  text NOT NULL DEFAULT 'minimal',
  recipe         jsonb NOT NULL DEFAULT '[]'::jsonb,
  healthcheck    text NOT NULL DEFAULT '',
  vcpus          integer NOT NULL DEFAULT 1 CHECK (vcpus > 0),
  memory_mb      integer NOT NULL DEFAULT 512 CHECK (memory_mb > 0),
  status         text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'success', 'failed', 'cancelled')),
  current_step   integer NOT NULL DEFAULT 0,
  total_steps    integer NOT NULL DEFAULT 0,
  -- One entry per finished step: {step, phase, cmd, stdout, stderr, exit, ok, elapsed_ms}.
  logs           jsonb NOT NULL DEFAULT '[]'::jsonb,
  error          text NOT NULL DEFAULT '',
  -- The build capsule and its host while the build runs (kept afterwards for the record).
  sandbox_id     uuid,
  host_id        uuid,
  created_at     timestamptz NOT NULL DEFAULT now(),
  started_at     timestamptz,
  completed_at   timestamptz,
  -- The template the build made (success only).
  template_id    uuid,
  team_id        uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
  skip_pre_post  boolean NOT NULL DEFAULT false,
  default_user   text NOT NULL DEFAULT 'root',
  default_env    jsonb NOT NULL DEFAULT '{}'::jsonb,
  metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
  -- Lease of the worker running the build, renewed while it runs: a running
  -- build whose lease ran out belongs to a control plane that died.
  lease_expires_at timestamptz
);
CREATE INDEX template_builds_created_idx ON template_builds (created_at DESC);
CREATE INDEX template_builds_status_idx ON template_builds (status);
-- Two live builds of one name could never both save their template.
CREATE UNIQUE INDEX template_builds_live_name_idx ON template_builds (name) WHERE status IN ('pending', 'running');

-- Uploaded COPY archives, in the database so that any control plane's worker
-- can run the build, also after a restart; removed when the build ends.
CREATE TABLE template_build_archives (
  build_id  uuid PRIMARY KEY REFERENCES template_builds (id) ON DELETE CASCADE,
  data      bytea NOT NULL
);

-- START commands of a built template, run in the background by every capsule
-- made from it (processes cannot be captured in a container snapshot):
-- [{cmd, user, cwd, env}].
ALTER TABLE templates ADD COLUMN start_commands jsonb NOT NULL DEFAULT '[]'::jsonb;
