// Request and response schemas of /v1/snapshots (the original Wrenn OpenAPI
// Template schema; vcpus/memory_mb are set for snapshots only).
import { Type, type Static } from '@sinclair/typebox';
import { SAFE_NAME_RE } from '@wrenn/contracts';
import { DateTime, StringEnum } from '../routes/schemas.js';

export const TEMPLATE_TYPES = ['base', 'snapshot'] as const;

export const TemplateName = Type.String({
  pattern: SAFE_NAME_RE.source,
  description: '1-64 letters, digits, ".", "_" or "-", starting with a letter or digit; no ".."',
});

export const Template = Type.Object(
  {
    name: Type.String(),
    type: StringEnum(TEMPLATE_TYPES),
    vcpus: Type.Union([Type.Integer(), Type.Null()], { description: 'Baked into snapshots; null for base images' }),
    memory_mb: Type.Union([Type.Integer(), Type.Null()], {
      description: 'Baked into snapshots; null for base images',
    }),
    size_bytes: Type.Integer({ description: 'Disk space the template takes on its host' }),
    created_at: DateTime,
    platform: Type.Boolean({ description: 'Shared by the platform (read-only for teams) rather than your team' }),
    metadata: Type.Record(Type.String(), Type.Unknown()),
  },
  { $id: 'Template', title: 'Template' },
);

/** Template as platform admins see it: whose it is and where its files are. */
export const AdminTemplate = Type.Object(
  {
    ...Template.properties,
    team_id: Type.String({ description: 'team-… of the owning team (the platform team for platform templates)' }),
    host_id: Type.Union([Type.String(), Type.Null()], {
      description: 'host-… holding the files (capsules of it are placed there); null = on every host',
    }),
    team_deleted: Type.Boolean({
      description: 'Its team was deleted: its files are being removed from the hosts (retried until each is back)',
    }),
  },
  { $id: 'AdminTemplate', title: 'AdminTemplate' },
);

export const CreateSnapshotRequest = Type.Object(
  {
    sandbox_id: Type.String({ description: 'cl-… id of a running or paused capsule' }),
    name: Type.Optional(TemplateName),
  },
  { additionalProperties: false },
);
export type CreateSnapshotBody = Static<typeof CreateSnapshotRequest>;

export const CreateSnapshotQuery = Type.Object(
  {
    overwrite: Type.Optional(
      StringEnum(['true', 'false'], { description: "Replace the team's template of the same name" }),
    ),
  },
  { additionalProperties: false },
);

export const ListTemplatesQuery = Type.Object(
  { type: Type.Optional(StringEnum(TEMPLATE_TYPES)) },
  { additionalProperties: false },
);

export const TemplateNameParams = Type.Object({ name: Type.String({ description: 'Template name' }) });

export const TEMPLATE_SCHEMAS = [Template, AdminTemplate];
