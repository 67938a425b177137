// Request and response schemas shared by the routes. They validate requests,
// shape responses (fields not listed are never serialised) and feed the OpenAPI document.
import { Type, type TSchema } from '@sinclair/typebox';
import { ErrorSchema } from '../errors.js';

export { ErrorSchema };

const STATUS_TEXT: Record<number, string> = {
  400: 'Invalid request',
  401: 'Not authenticated',
  403: 'Not allowed',
  404: 'Not found',
  409: 'Conflict',
  413: 'Body too large',
};

/** Error responses for the OpenAPI document. */
export function errorResponses(...statuses: number[]): Record<number, TSchema> {
  const out: Record<number, TSchema> = {};
  for (const s of statuses) out[s] = Type.Ref(ErrorSchema, { description: STATUS_TEXT[s] ?? 'Error' });
  return out;
}

export const DateTime = Type.String({ format: 'date-time' });

/** A string enum rendered as `{type: string, enum: [...]}` in the OpenAPI document. */
export function StringEnum<const T extends readonly string[]>(
  values: T,
  opts: { description?: string; default?: T[number] } = {},
) {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...opts });
}

export const WireId = (prefix: string, description: string) =>
  Type.String({ description: `${description} (\`${prefix}\` + 25 base36 characters)`, examples: [`${prefix}…`] });

export const AuthResponse = Type.Object(
  {
    token: Type.String({ description: 'Session JWT, valid for 6 hours' }),
    user_id: Type.String(),
    team_id: Type.String(),
    email: Type.String(),
    name: Type.String(),
  },
  { $id: 'AuthResponse', title: 'AuthResponse' },
);

export const Role = StringEnum(['owner', 'admin', 'member']);

export const Team = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    slug: Type.String({ description: 'Immutable, e.g. a1b2c3-d4e5f6' }),
    is_byoc: Type.Boolean(),
    created_at: DateTime,
  },
  { $id: 'Team', title: 'Team' },
);

export const TeamWithRole = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    slug: Type.String(),
    is_byoc: Type.Boolean(),
    created_at: DateTime,
    role: Role,
  },
  { $id: 'TeamWithRole', title: 'TeamWithRole' },
);

export const TeamMember = Type.Object(
  {
    user_id: Type.String(),
    name: Type.String(),
    email: Type.String(),
    role: Role,
    joined_at: DateTime,
  },
  { $id: 'TeamMember', title: 'TeamMember' },
);

export const TeamDetail = Type.Object(
  { team: Type.Ref(Team), members: Type.Array(Type.Ref(TeamMember)) },
  { $id: 'TeamDetail', title: 'TeamDetail' },
);

export const ApiKey = Type.Object(
  {
    id: Type.String(),
    team_id: Type.String(),
    name: Type.String(),
    key_prefix: Type.String({ description: 'The first 10 characters of the key, e.g. "wrn_ab12cd"' }),
    created_by: Type.Union([Type.String(), Type.Null()]),
    created_at: DateTime,
    last_used: Type.Union([DateTime, Type.Null()]),
    creator_email: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    key: Type.Optional(Type.String({ description: 'The full key. Only in the creation response, never again.' })),
  },
  { $id: 'APIKeyResponse', title: 'APIKeyResponse' },
);

export const MeResponse = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    email: Type.String(),
    is_admin: Type.Boolean(),
    has_password: Type.Boolean(),
    providers: Type.Array(Type.String(), { description: 'Linked OAuth providers, e.g. ["github"]' }),
  },
  { $id: 'MeResponse', title: 'MeResponse' },
);

export const UserSearchResult = Type.Object(
  { user_id: Type.String(), email: Type.String() },
  { $id: 'UserSearchResult', title: 'UserSearchResult' },
);

export const AuditLogItem = Type.Object(
  {
    id: Type.String(),
    actor_type: StringEnum(['user', 'api_key', 'system']),
    actor_id: Type.Optional(Type.String()),
    actor_name: Type.Optional(Type.String()),
    resource_type: Type.String(),
    resource_id: Type.Optional(Type.String()),
    action: Type.String(),
    scope: StringEnum(['team', 'admin']),
    status: StringEnum(['success', 'info', 'warning', 'error']),
    metadata: Type.Record(Type.String(), Type.Unknown()),
    created_at: Type.String({ description: 'RFC 3339 with microseconds' }),
  },
  { $id: 'AuditLogEntry', title: 'AuditLogEntry' },
);

/** Schemas registered once with `app.addSchema` and referenced from routes (components in OpenAPI). */
export const SHARED_SCHEMAS = [
  ErrorSchema,
  AuthResponse,
  Team,
  TeamWithRole,
  TeamMember,
  TeamDetail,
  ApiKey,
  MeResponse,
  UserSearchResult,
  AuditLogItem,
];

export const Email = Type.String({ minLength: 1, maxLength: 320, description: 'Trimmed and lowercased' });
export const Name = Type.String({ minLength: 1, maxLength: 200, description: '1–100 characters after trimming' });
export const NewPassword = Type.String({
  minLength: 8,
  maxLength: 128,
  description: '8–128 characters, not trivially weak',
});
