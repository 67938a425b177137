// Kysely table types; they mirror migrations/*.sql.
import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';

export type TeamRole = 'owner' | 'admin' | 'member';
export type UserStatus = 'active' | 'inactive' | 'disabled' | 'deleted';
export type ActorType = 'user' | 'api_key' | 'system';
export type AuditScope = 'team' | 'admin';
export type AuditStatus = 'success' | 'info' | 'warning' | 'error';

type CreatedAt = ColumnType<Date, Date | string | undefined, never>;
type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
export type JsonObject = { [key: string]: unknown };

export interface TeamsTable {
  id: Generated<string>;
  name: string;
  slug: string;
  is_byoc: Generated<boolean>;
  created_at: CreatedAt;
  deleted_at: NullableTimestamp;
}

export interface UsersTable {
  id: Generated<string>;
  email: string;
  password_hash: string | null;
  name: Generated<string>;
  is_admin: Generated<boolean>;
  status: Generated<UserStatus>;
  created_at: CreatedAt;
  updated_at: Timestamp;
  deleted_at: NullableTimestamp;
}

export interface UsersTeamsTable {
  user_id: string;
  team_id: string;
  is_default: Generated<boolean>;
  role: Generated<TeamRole>;
  created_at: CreatedAt;
}

export interface TeamApiKeysTable {
  id: Generated<string>;
  team_id: string;
  name: string;
  key_hash: string;
  key_prefix: string;
  created_by: string | null;
  created_at: CreatedAt;
  last_used: NullableTimestamp;
}

export interface OAuthProvidersTable {
  provider: string;
  provider_id: string;
  user_id: string;
  email: Generated<string>;
  created_at: CreatedAt;
}

export interface AdminPermissionsTable {
  id: Generated<string>;
  user_id: string;
  permission: string;
  created_at: CreatedAt;
}

export interface AuditLogsTable {
  id: Generated<string>;
  team_id: string;
  actor_type: ActorType;
  actor_id: string | null;
  actor_name: Generated<string>;
  resource_type: string;
  resource_id: string | null;
  action: string;
  scope: Generated<AuditScope>;
  status: Generated<AuditStatus>;
  // Written as a JSON string (both pg and PGlite cast it to jsonb), read back as an object.
  metadata: ColumnType<JsonObject, string | undefined, never>;
  created_at: CreatedAt;
}

export type HostType = 'regular' | 'byoc';
export type HostStatus = 'pending' | 'online' | 'offline' | 'draining' | 'unreachable';
export type CapsuleStatus = 'pending' | 'starting' | 'running' | 'paused' | 'stopped' | 'missing' | 'error';
export type MetricTier = '10m' | '2h' | '24h';
type Json = ColumnType<JsonObject, string | undefined, string>;

export interface HostsTable {
  id: Generated<string>;
  type: Generated<HostType>;
  team_id: string | null;
  provider: Generated<string>;
  availability_zone: Generated<string>;
  arch: Generated<string>;
  cpu_cores: Generated<number>;
  memory_mb: Generated<number>;
  disk_gb: Generated<number>;
  address: Generated<string>;
  status: Generated<HostStatus>;
  last_heartbeat_at: NullableTimestamp;
  metadata: Json;
  agent_token: Generated<string>;
  created_by: string | null;
  created_at: CreatedAt;
  updated_at: Timestamp;
}

export interface HostTokensTable {
  id: Generated<string>;
  host_id: string;
  token_hash: string;
  created_by: string | null;
  created_at: CreatedAt;
  expires_at: Timestamp;
  used_at: NullableTimestamp;
}

export interface HostTagsTable {
  host_id: string;
  tag: string;
}

export interface HostRefreshTokensTable {
  id: Generated<string>;
  host_id: string;
  token_hash: string;
  expires_at: Timestamp;
  created_at: CreatedAt;
  revoked_at: NullableTimestamp;
}

export interface SandboxesTable {
  id: Generated<string>;
  team_id: string;
  host_id: string | null;
  template: Generated<string>;
  template_id: Generated<string>;
  template_team_id: Generated<string>;
  status: Generated<CapsuleStatus>;
  vcpus: Generated<number>;
  memory_mb: Generated<number>;
  disk_size_mb: Generated<number>;
  timeout_sec: Generated<number>;
  host_ip: Generated<string>;
  error: Generated<string>;
  /** The user's labels (string → string); filterable in GET /v1/capsules. */
  metadata: Json;
  /** What the host agent reported at create/resume (runtime, versions). */
  agent_metadata: Json;
  created_at: CreatedAt;
  started_at: NullableTimestamp;
  last_active_at: NullableTimestamp;
  last_updated: Timestamp;
}

export interface SandboxMetricPointsTable {
  sandbox_id: string;
  tier: MetricTier;
  // bigint columns come back as strings from pg; convert with Number() when reading.
  ts: ColumnType<string, number | string, number | string>;
  cpu_pct: number;
  mem_bytes: ColumnType<string, number | string, number | string>;
  disk_bytes: ColumnType<string, number | string, number | string>;
}

export interface SandboxMetricsSnapshotsTable {
  id: Generated<string>;
  team_id: string;
  sampled_at: CreatedAt;
  running_count: number;
  vcpus_reserved: number;
  memory_mb_reserved: number;
}

export type TemplateType = 'base' | 'snapshot';

export interface TemplatesTable {
  id: Generated<string>;
  /** The all-zero UUID for platform templates (visible to every team). */
  team_id: string;
  name: string;
  type: Generated<TemplateType>;
  vcpus: Generated<number>;
  memory_mb: Generated<number>;
  size_bytes: ColumnType<string, number | string | undefined, number | string>;
  /** '' = the image's own default user. */
  default_user: Generated<string>;
  default_env: Json;
  metadata: Json;
  /** Host holding a snapshot's files; null = present on every host. */
  host_id: string | null;
  /** Background processes every capsule of the template starts (built templates' START steps). */
  start_commands: JsonArrayColumn<StartCommand>;
  created_at: CreatedAt;
}

/** A START step of a recipe, with the user, directory and environment in effect at that step. */
export interface StartCommand {
  cmd: string;
  user: string;
  cwd: string;
  env: Record<string, string>;
}

type JsonArrayColumn<T> = ColumnType<T[], string | undefined, string>;

export type BuildStatus = 'pending' | 'running' | 'success' | 'failed' | 'cancelled';
export type BuildPhase = 'pre-build' | 'recipe' | 'post-build' | 'healthcheck' | 'setup';

export interface BuildLogEntry {
  step: number;
  phase: BuildPhase;
  cmd: string;
  stdout: string;
  stderr: string;
  exit: number;
  ok: boolean;
  elapsed_ms: number;
}

export interface TemplateBuildsTable {
  id: Generated<string>;
  name: string;
  base_template: Generated<string>;
  recipe: JsonArrayColumn<string>;
  healthcheck: Generated<string>;
  vcpus: Generated<number>;
  memory_mb: Generated<number>;
  status: Generated<BuildStatus>;
  current_step: Generated<number>;
  total_steps: Generated<number>;
  logs: JsonArrayColumn<BuildLogEntry>;
  error: Generated<string>;
  sandbox_id: string | null;
  host_id: string | null;
  created_at: CreatedAt;
  started_at: NullableTimestamp;
  completed_at: NullableTimestamp;
  template_id: string | null;
  team_id: Generated<string>;
  skip_pre_post: Generated<boolean>;
  default_user: Generated<string>;
  default_env: Json;
  metadata: Json;
  /** Until when the worker running the build holds it (renewed while it runs). */
  lease_expires_at: NullableTimestamp;
}

export interface TemplateBuildArchivesTable {
  build_id: string;
  data: Buffer;
}

export interface DB {
  teams: TeamsTable;
  users: UsersTable;
  users_teams: UsersTeamsTable;
  team_api_keys: TeamApiKeysTable;
  oauth_providers: OAuthProvidersTable;
  admin_permissions: AdminPermissionsTable;
  audit_logs: AuditLogsTable;
  hosts: HostsTable;
  host_tokens: HostTokensTable;
  host_tags: HostTagsTable;
  host_refresh_tokens: HostRefreshTokensTable;
  sandboxes: SandboxesTable;
  sandbox_metric_points: SandboxMetricPointsTable;
  sandbox_metrics_snapshots: SandboxMetricsSnapshotsTable;
  templates: TemplatesTable;
  template_builds: TemplateBuildsTable;
  template_build_archives: TemplateBuildArchivesTable;
}

export type UserRow = Selectable<UsersTable>;
export type TeamRow = Selectable<TeamsTable>;
export type ApiKeyRow = Selectable<TeamApiKeysTable>;
export type NewAuditLog = Insertable<AuditLogsTable>;
export type HostRow = Selectable<HostsTable>;
export type SandboxRow = Selectable<SandboxesTable>;
export type TemplateRow = Selectable<TemplatesTable>;
export type BuildRow = Selectable<TemplateBuildsTable>;
