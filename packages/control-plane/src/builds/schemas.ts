// Request and response schemas of /v1/admin/builds.
import { Type, type Static } from '@sinclair/typebox';
import { DateTime, StringEnum, WireId } from '../routes/schemas.js';
import { TemplateName } from '../templates/schemas.js';

export const BUILD_STATUSES = ['pending', 'running', 'success', 'failed', 'cancelled'] as const;
export const BUILD_PHASES = ['setup', 'pre-build', 'recipe', 'post-build', 'healthcheck'] as const;
export const MAX_RECIPE_LINES = 1000;

export const BUILD_DEFAULTS = { baseTemplate: 'minimal', vcpus: 1, memoryMb: 512 } as const;

export const CreateBuildRequest = Type.Object(
  {
    name: TemplateName,
    base_template: Type.Optional(
      Type.String({ pattern: TemplateName.pattern, description: 'Template the build capsule starts from' }),
    ),
    recipe: Type.Array(Type.String({ maxLength: 65_536 }), {
      minItems: 1,
      maxItems: MAX_RECIPE_LINES,
      description: 'One instruction per element: RUN, START, ENV, WORKDIR, USER or COPY (see the description)',
    }),
    healthcheck: Type.Optional(
      Type.String({
        maxLength: 65_536,
        description: '`[--interval=3s] [--timeout=10s] [--start-period=0s] [--retries=0] <cmd>`; empty = none',
      }),
    ),
    vcpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    memory_mb: Type.Optional(Type.Integer({ minimum: 128, maximum: 1_048_576 })),
    skip_pre_post: Type.Optional(
      Type.Boolean({ description: 'Skip the pre-build (apt-get update, USER wrenn-user) and post-build steps' }),
    ),
  },
  { additionalProperties: false, $id: 'CreateBuildRequest', title: 'CreateBuildRequest' },
);
export type CreateBuildBody = Static<typeof CreateBuildRequest>;

export const BuildLogEntry = Type.Object(
  {
    step: Type.Integer({ description: 'Step number over all phases, from 1' }),
    phase: StringEnum(BUILD_PHASES),
    cmd: Type.String(),
    stdout: Type.String(),
    stderr: Type.String(),
    exit: Type.Integer(),
    ok: Type.Boolean(),
    elapsed_ms: Type.Integer(),
  },
  { $id: 'BuildLogEntry', title: 'BuildLogEntry' },
);

export const Build = Type.Object(
  {
    id: WireId('bld-', 'Build id'),
    name: Type.String(),
    base_template: Type.String(),
    recipe: Type.Array(Type.String()),
    healthcheck: Type.Optional(Type.String()),
    vcpus: Type.Integer(),
    memory_mb: Type.Integer(),
    status: StringEnum(BUILD_STATUSES),
    current_step: Type.Integer(),
    total_steps: Type.Integer(),
    logs: Type.Array(Type.Ref(BuildLogEntry)),
    error: Type.Optional(Type.String()),
    sandbox_id: Type.Optional(Type.String({ description: 'cl-… id of the build capsule' })),
    host_id: Type.Optional(Type.String({ description: 'host-… id of the build host' })),
    skip_pre_post: Type.Boolean(),
    default_user: Type.String(),
    default_env: Type.Record(Type.String(), Type.String()),
    created_at: DateTime,
    started_at: Type.Optional(DateTime),
    completed_at: Type.Optional(DateTime),
  },
  { $id: 'Build', title: 'Build' },
);

export const BuildIdParams = Type.Object({ id: Type.String({ description: 'bld-… build id' }) });

export const ListBuildsQuery = Type.Object(
  {
    status: Type.Optional(StringEnum(BUILD_STATUSES)),
    limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,3}$', description: '1-200, default 50' })),
  },
  { additionalProperties: false },
);

export const BUILD_SCHEMAS = [BuildLogEntry, Build, CreateBuildRequest];
