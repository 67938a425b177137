-- Foundation: teams, users, memberships, API keys, OAuth links, admin permissions, audit log.
-- Applied by src/db/migrate.ts inside one transaction; never edit an applied migration, add a new file.

CREATE TABLE teams (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 128),
  -- "xxxxxx-yyyyyy" (6 random bytes hex); immutable and kept after a soft delete so it is never reused.
  slug        text NOT NULL UNIQUE,
  is_byoc     boolean NOT NULL DEFAULT false,
  created_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz
);

CREATE TABLE users (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  -- Stored trimmed and lowercased, so the unique constraint is case-insensitive.
  email          text NOT NULL UNIQUE CHECK (email = lower(btrim(email)) AND email LIKE '_%@_%'),
  password_hash  text,
  name           text NOT NULL DEFAULT '' CHECK (char_length(name) <= 100),
  is_admin       boolean NOT NULL DEFAULT false,
  status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'disabled', 'deleted')),
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  deleted_at     timestamptz
);

CREATE TABLE users_teams (
  user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  team_id     uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
  is_default  boolean NOT NULL DEFAULT false,
  role        text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (team_id, user_id)
);
CREATE INDEX users_teams_user_id_idx ON users_teams (user_id);
-- Exactly one owner per team at most, and at most one default team per user.
CREATE UNIQUE INDEX users_teams_one_owner_idx ON users_teams (team_id) WHERE role = 'owner';
CREATE UNIQUE INDEX users_teams_one_default_idx ON users_teams (user_id) WHERE is_default;

CREATE TABLE team_api_keys (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  team_id     uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
  name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
  -- Only the SHA-256 of the key is kept; the key itself is shown once at creation.
  key_hash    text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
  key_prefix  text NOT NULL,
  created_by  uuid REFERENCES users (id) ON DELETE SET NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  last_used   timestamptz
);
CREATE INDEX team_api_keys_team_id_idx ON team_api_keys (team_id);

CREATE TABLE oauth_providers (
  provider     text NOT NULL,
  provider_id  text NOT NULL,
  user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  email        text NOT NULL DEFAULT '',
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (provider, provider_id)
);
CREATE INDEX oauth_providers_user_id_idx ON oauth_providers (user_id);
CREATE UNIQUE INDEX oauth_providers_user_provider_idx ON oauth_providers (user_id, provider);

CREATE TABLE admin_permissions (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  permission  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (user_id, permission)
);
CREATE INDEX admin_permissions_user_id_idx ON admin_permissions (user_id);

-- No foreign key on team_id: the log outlives teams.
CREATE TABLE audit_logs (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  team_id        uuid NOT NULL,
  actor_type     text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'system')),
  actor_id       text,
  actor_name     text NOT NULL DEFAULT '',
  resource_type  text NOT NULL,
  resource_id    text,
  action         text NOT NULL,
  scope          text NOT NULL DEFAULT 'team' CHECK (scope IN ('team', 'admin')),
  status         text NOT NULL DEFAULT 'success' CHECK (status IN ('success', 'info', 'warning', 'error')),
  metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_team_created_idx ON audit_logs (team_id, created_at DESC, id DESC);
CREATE INDEX audit_logs_team_resource_idx ON audit_logs (team_id, resource_type, created_at DESC);

-- Append-only: rows can be added, never changed or removed.
CREATE FUNCTION audit_logs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_logs is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_logs_no_update BEFORE UPDATE OR DELETE ON audit_logs
  FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();

-- The platform team: the all-zero UUID owns platform templates and capsules.
INSERT INTO teams (id, name, slug) VALUES ('00000000-0000-0000-0000-000000000000', 'Platform', 'platform');
