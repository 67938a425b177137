// GET /v1/audit-logs: the session team's audit log, newest first, cursor-paginated.
import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { formatId } from '@wrenn/contracts';
import type { App, RouteContext } from '../server.js';
import type { AuditScope } from '../db/schema.js';
import { badRequest, parseIdParam } from '../errors.js';
import { teamOf } from '../auth/guards.js';
import { AuditLogItem, errorResponses } from './schemas.js';

export const AUDIT_DEFAULT_LIMIT = 50;
export const AUDIT_MAX_LIMIT = 200;
const RFC3339_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/i;
const FILTER_VALUE_RE = /^[a-z0-9_.:-]{1,64}$/;
const MAX_FILTER_VALUES = 20;

const MultiValue = Type.Union(
  [Type.String({ maxLength: 1024 }), Type.Array(Type.String({ maxLength: 1024 }), { maxItems: 20 })],
  {
    description: 'Repeat the parameter and/or separate values with commas',
  },
);

/** `a,b` and repeated parameters into one list; null when no filter was given. */
function filterValues(raw: string | string[] | undefined, param: string): string[] | null {
  if (raw === undefined) return null;
  const values = (Array.isArray(raw) ? raw : [raw])
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
  if (values.length === 0) return null;
  if (values.length > MAX_FILTER_VALUES) throw badRequest(`${param}: at most ${MAX_FILTER_VALUES} values`);
  for (const v of values) {
    if (!FILTER_VALUE_RE.test(v)) throw badRequest(`${param}: "${v.slice(0, 64)}" is not a valid value`);
  }
  return [...new Set(values)];
}

export function auditLogRoutes(app: App, ctx: RouteContext): void {
  const { db, guards } = ctx;

  app.get(
    '/v1/audit-logs',
    {
      preHandler: guards.requireTeamMember,
      schema: {
        summary: "The session team's audit log",
        description:
          'Newest first. Members see `team`-scoped events; owners and admins also see `admin`-scoped ones. ' +
          "To page, pass the previous response's `next_before` and `next_before_id` as `before` and `before_id`.",
        tags: ['audit'],
        security: [{ bearerAuth: [] }],
        querystring: Type.Object(
          {
            before: Type.Optional(Type.String({ description: 'RFC 3339 timestamp; entries strictly older' })),
            before_id: Type.Optional(Type.String({ description: 'log-… id of the last entry seen (with `before`)' })),
            limit: Type.Optional(Type.String({ description: `1–${AUDIT_MAX_LIMIT}, default ${AUDIT_DEFAULT_LIMIT}` })),
            resource_type: Type.Optional(MultiValue),
            action: Type.Optional(MultiValue),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            items: Type.Array(Type.Ref(AuditLogItem)),
            next_before: Type.Optional(Type.String()),
            next_before_id: Type.Optional(Type.String()),
          }),
          ...errorResponses(400, 401, 403),
        },
      },
    },
    async (request) => {
      const team = teamOf(request);
      const q = request.query;

      let limit = AUDIT_DEFAULT_LIMIT;
      if (q.limit !== undefined) {
        limit = /^\d{1,4}$/.test(q.limit) ? Number(q.limit) : NaN;
        if (!(limit >= 1 && limit <= AUDIT_MAX_LIMIT)) {
          throw badRequest(`limit must be an integer from 1 to ${AUDIT_MAX_LIMIT}`);
        }
      }
      if (q.before !== undefined && (!RFC3339_RE.test(q.before) || Number.isNaN(Date.parse(q.before)))) {
        throw badRequest('before must be an RFC 3339 timestamp, e.g. 2025-01-31T12:00:00.123456Z');
      }
      if (q.before_id !== undefined && q.before === undefined) throw badRequest('before_id needs before');
      const beforeId = q.before_id === undefined ? null : parseIdParam('auditLog', q.before_id, 'before_id');
      const resourceTypes = filterValues(q.resource_type, 'resource_type');
      const actions = filterValues(q.action, 'action');

      // Scope follows the role in the database, not the JWT's hint.
      const scopes: AuditScope[] = team.role === 'owner' || team.role === 'admin' ? ['team', 'admin'] : ['team'];

      let query = db
        .selectFrom('audit_logs')
        .select([
          'id',
          'actor_type',
          'actor_id',
          'actor_name',
          'resource_type',
          'resource_id',
          'action',
          'scope',
          'status',
          'metadata',
          // Microsecond precision, so a cursor taken from it loses nothing.
          sql<string>`to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`.as('created_at_text'),
        ])
        .where('team_id', '=', team.id)
        .where('scope', 'in', scopes);
      if (resourceTypes) query = query.where('resource_type', 'in', resourceTypes);
      if (actions) query = query.where('action', 'in', actions);
      if (q.before !== undefined) {
        const before = sql`${q.before}::timestamptz`;
        query =
          beforeId === null
            ? query.where(sql<boolean>`created_at < ${before}`)
            : query.where(sql<boolean>`(created_at, id) < (${before}, ${beforeId}::uuid)`);
      }
      const rows = await query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute();

      const items = rows.map((r) => ({
        id: formatId('auditLog', r.id),
        actor_type: r.actor_type,
        ...(r.actor_id ? { actor_id: r.actor_id } : {}),
        ...(r.actor_name ? { actor_name: r.actor_name } : {}),
        resource_type: r.resource_type,
        ...(r.resource_id ? { resource_id: r.resource_id } : {}),
        action: r.action,
        scope: r.scope,
        status: r.status,
        metadata: r.metadata,
        created_at: r.created_at_text,
      }));
      const last = items[items.length - 1];
      // A full page may have more behind it; a short page is the end.
      return last && items.length === limit
        ? { items, next_before: last.created_at, next_before_id: last.id }
        : { items };
    },
  );
}
