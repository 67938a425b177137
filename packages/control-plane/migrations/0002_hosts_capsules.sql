-- Hosts that run capsules, their credentials, and the capsules themselves.

CREATE TABLE hosts (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  type               text NOT NULL DEFAULT 'regular' CHECK (type IN ('regular', 'byoc')),
  -- BYOC hosts belong to a team; platform ("regular") hosts to none.
  team_id            uuid REFERENCES teams (id) ON DELETE CASCADE,
  provider           text NOT NULL DEFAULT '',
  availability_zone  text NOT NULL DEFAULT '',
  arch               text NOT NULL DEFAULT '',
  cpu_cores          integer NOT NULL DEFAULT 0 CHECK (cpu_cores >= 0),
  memory_mb          integer NOT NULL DEFAULT 0 CHECK (memory_mb >= 0),
  disk_gb            integer NOT NULL DEFAULT 0 CHECK (disk_gb >= 0),
  -- host:port where the control plane reaches the host agent's RPC server.
  address            text NOT NULL DEFAULT '',
  status             text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'online', 'offline', 'draining', 'unreachable')),
  last_heartbeat_at  timestamptz,
  metadata           jsonb NOT NULL DEFAULT '{}'::jsonb,
  -- Shared secret the control plane presents to the agent on every RPC; set at registration, never returned.
  agent_token        text NOT NULL DEFAULT '',
  created_by         uuid REFERENCES users (id) ON DELETE SET NULL,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  CHECK ((type = 'byoc') = (team_id IS NOT NULL))
);
CREATE INDEX hosts_type_idx ON hosts (type);
CREATE INDEX hosts_team_idx ON hosts (team_id);
CREATE INDEX hosts_status_idx ON hosts (status);

-- One-time registration tokens (1 hour); only their SHA-256 is kept.
CREATE TABLE host_tokens (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  host_id     uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
  token_hash  text NOT NULL UNIQUE,
  created_by  uuid REFERENCES users (id) ON DELETE SET NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  used_at     timestamptz
);
CREATE INDEX host_tokens_host_idx ON host_tokens (host_id);

CREATE TABLE host_tags (
  host_id  uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
  tag      text NOT NULL CHECK (char_length(tag) BETWEEN 1 AND 64),
  PRIMARY KEY (host_id, tag)
);
CREATE INDEX host_tags_tag_idx ON host_tags (tag);

-- Rotating refresh tokens (60 days): a new one is issued before the old one is revoked.
CREATE TABLE host_refresh_tokens (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  host_id     uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
  token_hash  text NOT NULL UNIQUE,
  expires_at  timestamptz NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);
CREATE INDEX host_refresh_tokens_host_idx ON host_refresh_tokens (host_id);

-- Capsules. Rows are kept after a capsule stops (history, audit, usage).
CREATE TABLE sandboxes (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  team_id           uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
  -- No foreign key: a stopped capsule outlives its host's record.
  host_id           uuid,
  template          text NOT NULL DEFAULT 'minimal',
  template_id       uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
  template_team_id  uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
  status            text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'starting', 'running', 'paused', 'stopped', 'missing', 'error')),
  vcpus             integer NOT NULL DEFAULT 1 CHECK (vcpus > 0),
  memory_mb         integer NOT NULL DEFAULT 512 CHECK (memory_mb > 0),
  disk_size_mb      integer NOT NULL DEFAULT 5120 CHECK (disk_size_mb > 0),
  timeout_sec       integer NOT NULL DEFAULT 0 CHECK (timeout_sec >= 0),
  host_ip           text NOT NULL DEFAULT '',
  -- Why the capsule is in `error` (shown to the user), empty otherwise.
  error             text NOT NULL DEFAULT '',
  metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at        timestamptz NOT NULL DEFAULT now(),
  started_at        timestamptz,
  last_active_at    timestamptz,
  last_updated      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sandboxes_team_idx ON sandboxes (team_id, created_at DESC);
CREATE INDEX sandboxes_host_status_idx ON sandboxes (host_id, status);
CREATE INDEX sandboxes_status_idx ON sandboxes (status);

-- Per-capsule metric points kept when a capsule pauses or stops (tiers as on the host agent).
CREATE TABLE sandbox_metric_points (
  sandbox_id  uuid NOT NULL,
  tier        text NOT NULL CHECK (tier IN ('10m', '2h', '24h')),
  ts          bigint NOT NULL,
  cpu_pct     double precision NOT NULL,
  mem_bytes   bigint NOT NULL,
  disk_bytes  bigint NOT NULL,
  PRIMARY KEY (sandbox_id, tier, ts)
);

-- Team-level usage sampled every 10 s (stats page, peaks, usage).
CREATE TABLE sandbox_metrics_snapshots (
  id                  bigserial PRIMARY KEY,
  team_id             uuid NOT NULL,
  sampled_at          timestamptz NOT NULL DEFAULT now(),
  running_count       integer NOT NULL,
  vcpus_reserved      integer NOT NULL,
  memory_mb_reserved  integer NOT NULL
);
CREATE INDEX sandbox_metrics_snapshots_team_idx ON sandbox_metrics_snapshots (team_id, sampled_at DESC);
