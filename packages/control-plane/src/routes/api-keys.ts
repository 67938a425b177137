// /v1/api-keys: team API keys (managed with a session JWT), and
// GET /v1/api-keys/current: the calling key itself (API-key auth).
import { Type } from '@sinclair/typebox';
import { formatId } from '@wrenn/contracts';
import type { App, RouteContext } from '../server.js';
import { badRequest, notFound, parseIdParam } from '../errors.js';
import { actorOf, sessionOf, teamOf } from '../auth/guards.js';
import { generateApiKey } from '../auth/api-keys.js';
import { ApiKey, errorResponses } from './schemas.js';

const DEFAULT_KEY_NAME = 'Unnamed API Key';
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

function iso(d: Date | null): string | null {
  return d ? d.toISOString() : null;
}

function later(a: Date | null, b: Date | undefined): Date | null {
  if (!b) return a;
  return a && a > b ? a : b;
}

export function apiKeyRoutes(app: App, ctx: RouteContext): void {
  const { db, audit, guards, apiKeys } = ctx;
  const security = [{ bearerAuth: [] }];

  app.post(
    '/v1/api-keys',
    {
      preHandler: guards.requireTeamMember,
      schema: {
        summary: "Create an API key for the session's team",
        description: 'The response is the only time the full key is shown; only its SHA-256 hash is stored.',
        tags: ['api-keys'],
        security,
        body: Type.Object(
          { name: Type.Optional(Type.String({ maxLength: 200, default: DEFAULT_KEY_NAME })) },
          { additionalProperties: false, title: 'CreateAPIKeyRequest' },
        ),
        response: { 201: Type.Ref(ApiKey), ...errorResponses(400, 401, 403) },
      },
    },
    async (request, reply) => {
      const { user } = sessionOf(request);
      const team = teamOf(request);
      const name = (request.body.name ?? DEFAULT_KEY_NAME).trim() || DEFAULT_KEY_NAME;
      if (name.length > 100 || CONTROL_RE.test(name)) {
        throw badRequest('name must be at most 100 characters without control characters');
      }
      const { key, hash, prefix } = generateApiKey();
      const row = await db
        .insertInto('team_api_keys')
        .values({ team_id: team.id, name, key_hash: hash, key_prefix: prefix, created_by: user.id })
        .returning(['id', 'created_at'])
        .executeTakeFirstOrThrow();
      audit.apiKeyCreated(actorOf(request), { id: row.id, teamId: team.id, name, prefix });
      return reply.code(201).send({
        id: formatId('apiKey', row.id),
        team_id: formatId('team', team.id),
        name,
        key_prefix: prefix,
        created_by: formatId('user', user.id),
        created_at: row.created_at.toISOString(),
        last_used: null,
        creator_email: user.email,
        key,
      });
    },
  );

  app.get(
    '/v1/api-keys',
    {
      preHandler: guards.requireTeamMember,
      schema: {
        summary: "The session team's API keys (never the keys themselves)",
        tags: ['api-keys'],
        security,
        response: { 200: Type.Array(Type.Ref(ApiKey)), ...errorResponses(401, 403) },
      },
    },
    async (request) => {
      const team = teamOf(request);
      const rows = await db
        .selectFrom('team_api_keys as k')
        .leftJoin('users as u', 'u.id', 'k.created_by')
        .select(['k.id', 'k.team_id', 'k.name', 'k.key_prefix', 'k.created_by', 'k.created_at', 'k.last_used'])
        .select('u.email as creator_email')
        .where('k.team_id', '=', team.id)
        .orderBy('k.created_at', 'desc')
        .orderBy('k.id')
        .execute();
      return rows.map((r) => ({
        id: formatId('apiKey', r.id),
        team_id: formatId('team', r.team_id),
        name: r.name,
        key_prefix: r.key_prefix,
        created_by: r.created_by ? formatId('user', r.created_by) : null,
        created_at: r.created_at.toISOString(),
        last_used: iso(later(r.last_used, apiKeys.pendingLastUsed(r.id))),
        creator_email: r.creator_email,
      }));
    },
  );

  app.get(
    '/v1/api-keys/current',
    {
      preHandler: guards.requireApiKey,
      schema: {
        summary: 'The API key making this request',
        description: 'Checks a key and shows which team it acts for.',
        tags: ['api-keys'],
        security: [{ apiKeyAuth: [] }],
        response: { 200: Type.Ref(ApiKey), ...errorResponses(401) },
      },
    },
    async (request) => {
      const auth = request.auth;
      if (auth?.kind !== 'api_key') throw new Error('unreachable: requireApiKey ran');
      const k = auth.key;
      return {
        id: formatId('apiKey', k.keyId),
        team_id: formatId('team', k.teamId),
        name: k.keyName,
        key_prefix: k.keyPrefix,
        created_by: k.createdBy ? formatId('user', k.createdBy) : null,
        created_at: k.createdAt.toISOString(),
        last_used: iso(k.lastUsed),
      };
    },
  );

  app.delete(
    '/v1/api-keys/:id',
    {
      preHandler: guards.requireTeamMember,
      schema: {
        summary: 'Revoke an API key',
        description: "Only keys of the session's team; any other id is a 404.",
        tags: ['api-keys'],
        security,
        params: Type.Object({ id: Type.String({ description: 'key-…' }) }),
        response: { 204: Type.Null({ description: 'Revoked' }), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      const team = teamOf(request);
      const keyId = parseIdParam('apiKey', request.params.id, 'id');
      const row = await db
        .deleteFrom('team_api_keys')
        .where('id', '=', keyId)
        .where('team_id', '=', team.id)
        .returning(['id', 'name'])
        .executeTakeFirst();
      if (!row) throw notFound('API key not found', 'api_key_not_found');
      apiKeys.revoked([row.id]);
      audit.apiKeyRevoked(actorOf(request), { id: row.id, teamId: team.id, name: row.name });
      return reply.code(204).send(null);
    },
  );
}
