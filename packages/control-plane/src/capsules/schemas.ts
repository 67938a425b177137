// Request and response schemas of the capsule API (shapes of the original
// Wrenn OpenAPI document, plus `disk_size_mb`, user `metadata` and `error`).
import { Type, type Static } from '@sinclair/typebox';
import { SAFE_NAME_RE } from '@wrenn/contracts';
import { DateTime, StringEnum } from '../routes/schemas.js';

export const CAPSULE_SECURITY: Record<string, string[]>[] = [{ apiKeyAuth: [] }, { bearerAuth: [] }];
export const IdParams = Type.Object({ id: Type.String({ description: 'cl-… capsule id' }) });

export const CAPSULE_STATES = ['pending', 'starting', 'running', 'paused', 'stopped', 'missing', 'error'] as const;

export const LIMITS = {
  maxVcpus: 64,
  minMemoryMb: 128,
  maxMemoryMb: 262_144,
  minDiskMb: 256,
  maxDiskMb: 102_400,
  /** 30 days. */
  maxTimeoutSec: 2_592_000,
  maxExecTimeoutSec: 86_400,
  maxMetadataKeys: 32,
  maxMetadataValue: 512,
  maxPath: 4096,
  maxArgs: 4096,
  maxEnvs: 256,
  /** files/write (buffered) body cap. */
  maxUploadBytes: 100 * 1024 * 1024,
} as const;

export const DEFAULTS = { template: 'minimal', vcpus: 1, memoryMb: 512, diskSizeMb: 5120, execTimeoutSec: 30 };

const SAFE_NAME = SAFE_NAME_RE.source;
const METADATA_KEY = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';
const ENV_KEY = '^[A-Za-z_][A-Za-z0-9_]{0,255}$';

export const Metadata = Type.Record(
  Type.String({ pattern: METADATA_KEY }),
  Type.String({ maxLength: LIMITS.maxMetadataValue }),
  {
    maxProperties: LIMITS.maxMetadataKeys,
    additionalProperties: false,
    description: `Your labels: up to ${LIMITS.maxMetadataKeys} keys (1-64 letters, digits, ".", "_", "-"), string values up to ${LIMITS.maxMetadataValue} characters`,
  },
);

export const Capsule = Type.Object(
  {
    id: Type.String({ description: 'cl-… capsule id' }),
    status: StringEnum(CAPSULE_STATES),
    template: Type.String(),
    vcpus: Type.Integer(),
    memory_mb: Type.Integer(),
    disk_size_mb: Type.Integer(),
    timeout_sec: Type.Integer({ description: 'Idle seconds before the capsule is paused (0 = never)' }),
    guest_ip: Type.String(),
    host_ip: Type.String(),
    created_at: DateTime,
    started_at: Type.Union([DateTime, Type.Null()]),
    last_active_at: Type.Union([DateTime, Type.Null()]),
    last_updated: DateTime,
    metadata: Type.Record(Type.String(), Type.String()),
    error: Type.Optional(Type.String({ description: 'Why the capsule is in state `error`' })),
  },
  { $id: 'Capsule', title: 'Capsule' },
);

export const CreateCapsuleRequest = Type.Object(
  {
    template: Type.Optional(Type.String({ pattern: SAFE_NAME, default: DEFAULTS.template })),
    vcpus: Type.Optional(Type.Integer({ minimum: 1, maximum: LIMITS.maxVcpus, default: DEFAULTS.vcpus })),
    memory_mb: Type.Optional(
      Type.Integer({ minimum: LIMITS.minMemoryMb, maximum: LIMITS.maxMemoryMb, default: DEFAULTS.memoryMb }),
    ),
    disk_size_mb: Type.Optional(
      Type.Integer({ minimum: LIMITS.minDiskMb, maximum: LIMITS.maxDiskMb, default: DEFAULTS.diskSizeMb }),
    ),
    timeout_sec: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: LIMITS.maxTimeoutSec,
        default: 0,
        description: 'Auto-pause after this many idle seconds (no exec, file or ping); 0 = never',
      }),
    ),
    metadata: Type.Optional(Metadata),
  },
  { additionalProperties: false, title: 'CreateCapsuleRequest' },
);
export type CreateCapsuleBody = Static<typeof CreateCapsuleRequest>;

export const Envs = Type.Record(Type.String({ pattern: ENV_KEY }), Type.String(), {
  maxProperties: LIMITS.maxEnvs,
  additionalProperties: false,
  description: 'Environment variables for the process',
});

export const SetTimeoutRequest = Type.Object(
  {
    timeout_sec: Type.Integer({
      minimum: 0,
      maximum: LIMITS.maxTimeoutSec,
      description: 'Auto-pause after this many idle seconds (no exec, file or ping), counted from now; 0 = never',
    }),
  },
  { additionalProperties: false, title: 'SetTimeoutRequest' },
);

export const ExecRequest = Type.Object(
  {
    cmd: Type.String({ minLength: 1, maxLength: LIMITS.maxPath }),
    args: Type.Optional(Type.Array(Type.String(), { maxItems: LIMITS.maxArgs })),
    timeout_sec: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: LIMITS.maxExecTimeoutSec,
        default: DEFAULTS.execTimeoutSec,
        description: 'Foreground only: the process is killed after this many seconds (504)',
      }),
    ),
    background: Type.Optional(Type.Boolean({ default: false })),
    tag: Type.Optional(
      Type.String({ pattern: SAFE_NAME, description: 'Background only: the process tag (default proc-{8 hex})' }),
    ),
    envs: Type.Optional(Envs),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: LIMITS.maxPath })),
    user: Type.Optional(Type.String({ pattern: '^[a-z_][a-z0-9_-]{0,31}$' })),
  },
  { additionalProperties: false, title: 'ExecRequest' },
);

export const ExecResponse = Type.Object(
  {
    sandbox_id: Type.String(),
    cmd: Type.String(),
    stdout: Type.String(),
    stderr: Type.String(),
    exit_code: Type.Integer(),
    duration_ms: Type.Integer(),
    encoding: StringEnum(['utf-8', 'base64'], {
      description: '"base64" (both streams) when stdout or stderr is not valid UTF-8',
    }),
  },
  { $id: 'ExecResponse', title: 'ExecResponse' },
);

export const BackgroundExecResponse = Type.Object(
  { sandbox_id: Type.String(), cmd: Type.String(), pid: Type.Integer(), tag: Type.String() },
  { $id: 'BackgroundExecResponse', title: 'BackgroundExecResponse' },
);

export const ProcessListResponse = Type.Object(
  {
    processes: Type.Array(
      Type.Object({
        pid: Type.Integer(),
        tag: Type.Optional(Type.String()),
        cmd: Type.String(),
        args: Type.Array(Type.String()),
      }),
    ),
  },
  { $id: 'ProcessListResponse', title: 'ProcessListResponse' },
);

export const PathRequest = Type.Object(
  { path: Type.String({ minLength: 1, maxLength: LIMITS.maxPath, description: 'Path inside the capsule' }) },
  { additionalProperties: false },
);

export const ListDirRequest = Type.Object(
  {
    path: Type.String({ minLength: 1, maxLength: LIMITS.maxPath }),
    depth: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 32, default: 1, description: '1 = immediate children (0 is treated as 1)' }),
    ),
  },
  { additionalProperties: false },
);

export const FileEntry = Type.Object(
  {
    name: Type.String(),
    path: Type.String(),
    type: StringEnum(['file', 'directory', 'symlink', 'unknown']),
    size: Type.Integer(),
    mode: Type.Integer(),
    permissions: Type.String({ description: 'e.g. "-rwxr-xr-x"' }),
    owner: Type.String(),
    group: Type.String(),
    modified_at: Type.Integer({ description: 'Unix seconds' }),
    symlink_target: Type.Union([Type.String(), Type.Null()]),
  },
  { $id: 'FileEntry', title: 'FileEntry' },
);

export const METRIC_RANGES = ['5m', '10m', '1h', '2h', '6h', '12h', '24h'] as const;
export type MetricRange = (typeof METRIC_RANGES)[number];

export const CapsuleMetrics = Type.Object(
  {
    sandbox_id: Type.String(),
    range: StringEnum(METRIC_RANGES),
    points: Type.Array(
      Type.Object({
        timestamp_unix: Type.Integer(),
        cpu_pct: Type.Number({ description: "CPU use in % of the capsule's vCPUs (0-100)" }),
        mem_bytes: Type.Integer(),
        disk_bytes: Type.Integer(),
      }),
    ),
  },
  { $id: 'CapsuleMetrics', title: 'CapsuleMetrics' },
);

export const STATS_RANGES = ['5m', '1h', '6h', '24h', '30d'] as const;
export type StatsRange = (typeof STATS_RANGES)[number];

export const CapsuleStats = Type.Object(
  {
    range: StringEnum(STATS_RANGES),
    current: Type.Object({
      running_count: Type.Integer(),
      vcpus_reserved: Type.Integer(),
      memory_mb_reserved: Type.Integer(),
      sampled_at: DateTime,
    }),
    peaks: Type.Object(
      { running_count: Type.Integer(), vcpus: Type.Integer(), memory_mb: Type.Integer() },
      { description: 'Highest values over the last 30 days' },
    ),
    series: Type.Object(
      {
        labels: Type.Array(DateTime),
        running: Type.Array(Type.Integer()),
        vcpus: Type.Array(Type.Integer()),
        memory_mb: Type.Array(Type.Integer()),
      },
      { description: 'Parallel arrays (highest value per time bucket) for charts' },
    ),
  },
  { $id: 'CapsuleStats', title: 'CapsuleStats' },
);

/** Registered once with app.addSchema (components in the OpenAPI document). */
export const CAPSULE_SCHEMAS = [
  Capsule,
  ExecResponse,
  BackgroundExecResponse,
  ProcessListResponse,
  FileEntry,
  CapsuleMetrics,
  CapsuleStats,
];
