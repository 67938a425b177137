// /v1/hosts: host records (platform `regular` hosts and team-owned BYOC hosts),
// one-time registration, host JWT + rotating refresh tokens, heartbeats, tags,
// and deletion (409 with the affected capsules unless ?force=true).
import net from 'node:net';
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { sql } from 'kysely';
import { formatId } from '@wrenn/contracts';
import type { App, RouteContext } from '../server.js';
import type { HostRow } from '../db/schema.js';
import { badRequest, conflict, forbidden, notFound, parseIdParam, unauthorized } from '../errors.js';
import { actorOf, sessionOf } from '../auth/guards.js';
import { REFRESH_TOKEN_TTL_MS, REGISTRATION_TOKEN_TTL_MS, hashToken, newOpaqueToken } from '../hosts/credentials.js';
import { ACTIVE_CAPSULE_STATES } from '../hosts/monitor.js';
import { DateTime, StringEnum, errorResponses } from './schemas.js';

const Host = Type.Object(
  {
    id: Type.String(),
    type: StringEnum(['regular', 'byoc']),
    team_id: Type.Union([Type.String(), Type.Null()]),
    provider: Type.Union([Type.String(), Type.Null()]),
    availability_zone: Type.Union([Type.String(), Type.Null()]),
    arch: Type.Union([Type.String(), Type.Null()]),
    cpu_cores: Type.Union([Type.Integer(), Type.Null()]),
    memory_mb: Type.Union([Type.Integer(), Type.Null()]),
    disk_gb: Type.Union([Type.Integer(), Type.Null()]),
    address: Type.Union([Type.String(), Type.Null()]),
    status: StringEnum(['pending', 'online', 'offline', 'draining', 'unreachable']),
    last_heartbeat_at: Type.Union([DateTime, Type.Null()]),
    created_by: Type.String(),
    created_at: DateTime,
    updated_at: DateTime,
  },
  { $id: 'Host', title: 'Host' },
);

const CreateHostResponse = Type.Object(
  {
    host: Type.Ref(Host),
    registration_token: Type.String({ description: 'One-time registration token; expires in 1 hour.' }),
  },
  { $id: 'CreateHostResponse', title: 'CreateHostResponse' },
);

const HostCredentials = Type.Object(
  {
    host: Type.Ref(Host),
    token: Type.String({ description: 'Host JWT for the X-Host-Token header; valid for 7 days.' }),
    refresh_token: Type.String({ description: 'Valid for 60 days; rotated on each use.' }),
  },
  { $id: 'HostCredentials', title: 'HostCredentials' },
);

const HostHasCapsulesError = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ examples: ['host_has_sandboxes'] }),
      message: Type.String(),
      sandbox_ids: Type.Array(Type.String()),
    }),
  },
  { $id: 'HostHasCapsulesError', title: 'HostHasCapsulesError' },
);

const HostIdParams = Type.Object({ id: Type.String() });
const TAG_RE = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$/;
const LABEL_RE = /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/;

function orNull<T>(v: T, empty: T): T | null {
  return v === empty ? null : v;
}

export function hostJson(h: HostRow) {
  return {
    id: formatId('host', h.id),
    type: h.type,
    team_id: h.team_id ? formatId('team', h.team_id) : null,
    provider: orNull(h.provider, ''),
    availability_zone: orNull(h.availability_zone, ''),
    arch: orNull(h.arch, ''),
    cpu_cores: orNull(h.cpu_cores, 0),
    memory_mb: orNull(h.memory_mb, 0),
    disk_gb: orNull(h.disk_gb, 0),
    address: orNull(h.address, ''),
    status: h.status,
    last_heartbeat_at: h.last_heartbeat_at ? h.last_heartbeat_at.toISOString() : null,
    created_by: h.created_by ? formatId('user', h.created_by) : '',
    created_at: h.created_at.toISOString(),
    updated_at: h.updated_at.toISOString(),
  };
}

/** `ip:port` or `hostname:port` (IPv6 in brackets) with a real port. */
export function validAddress(address: string): boolean {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]{1,253})):(\d{1,5})$/.exec(address);
  if (!m) return false;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return false;
  return m[1] !== undefined ? net.isIPv6(m[1]) : true;
}

export function hostRoutes(app: App, ctx: RouteContext): void {
  const { db, audit, guards, hostTokens } = ctx;
  const security = [{ bearerAuth: [] }];
  for (const schema of [Host, CreateHostResponse, HostCredentials, HostHasCapsulesError]) app.addSchema(schema);

  /** The caller's role in a team (null when not a member of a live team). */
  async function roleIn(userId: string, teamId: string): Promise<string | null> {
    const row = await db
      .selectFrom('users_teams as m')
      .innerJoin('teams as t', 't.id', 'm.team_id')
      .select('m.role')
      .where('m.user_id', '=', userId)
      .where('m.team_id', '=', teamId)
      .where('t.deleted_at', 'is', null)
      .executeTakeFirst();
    return row?.role ?? null;
  }

  /**
   * Loads a host the caller may see: admins see every host, others only their
   * teams' BYOC hosts (anything else is a 404, never a 403). With `manage`, the
   * caller must also be an owner/admin of that team.
   */
  async function loadHost(request: FastifyRequest, rawId: string, manage: boolean): Promise<HostRow> {
    const id = parseIdParam('host', rawId, 'id');
    const { user } = sessionOf(request);
    const host = await db.selectFrom('hosts').selectAll().where('id', '=', id).executeTakeFirst();
    if (!host) throw notFound('host not found');
    if (user.is_admin) return host;
    const role = host.team_id ? await roleIn(user.id, host.team_id) : null;
    if (role === null) throw notFound('host not found');
    if (manage && role !== 'owner' && role !== 'admin') {
      throw forbidden('only owners and admins of the team can manage its hosts');
    }
    return host;
  }

  async function issueRegistrationToken(hostId: string, userId: string | null): Promise<string> {
    const { token, hash } = newOpaqueToken();
    await db
      .insertInto('host_tokens')
      .values({
        host_id: hostId,
        token_hash: hash,
        created_by: userId,
        expires_at: new Date(Date.now() + REGISTRATION_TOKEN_TTL_MS),
      })
      .execute();
    return token;
  }

  /** Signs a host JWT and stores a new refresh token. */
  async function issueCredentials(hostId: string): Promise<{ token: string; refresh_token: string }> {
    const refresh = newOpaqueToken();
    await db
      .insertInto('host_refresh_tokens')
      .values({ host_id: hostId, token_hash: refresh.hash, expires_at: new Date(Date.now() + REFRESH_TOKEN_TTL_MS) })
      .execute();
    return { token: await hostTokens.sign(hostId), refresh_token: refresh.token };
  }

  async function activeCapsuleIds(hostId: string): Promise<string[]> {
    const rows = await db
      .selectFrom('sandboxes')
      .select('id')
      .where('host_id', '=', hostId)
      .where('status', 'in', ACTIVE_CAPSULE_STATES)
      .orderBy('created_at')
      .execute();
    return rows.map((r) => r.id);
  }

  app.post(
    '/v1/hosts',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Create a host and its one-time registration token',
        description:
          'Regular (platform) hosts can only be created by platform admins. BYOC hosts belong to a team with BYOC ' +
          'enabled and can be created by its owners and admins. Start the host agent with ' +
          '`--register <registration_token> --address <ip:port>` within an hour.',
        tags: ['hosts'],
        security,
        body: Type.Object(
          {
            type: StringEnum(['regular', 'byoc']),
            team_id: Type.Optional(Type.String({ description: 'Required for BYOC hosts.' })),
            provider: Type.Optional(Type.String({ maxLength: 64 })),
            availability_zone: Type.Optional(Type.String({ maxLength: 64 })),
          },
          { additionalProperties: false, title: 'CreateHostRequest' },
        ),
        response: { 201: Type.Ref(CreateHostResponse), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      const { user } = sessionOf(request);
      const body = request.body;
      for (const field of ['provider', 'availability_zone'] as const) {
        const v = body[field];
        if (v !== undefined && v !== '' && !LABEL_RE.test(v)) {
          throw badRequest(`${field} must be 1-64 letters, digits, spaces, dots, dashes or underscores`);
        }
      }
      let teamId: string | null = null;
      if (body.type === 'regular') {
        if (body.team_id !== undefined) throw badRequest('team_id is only allowed for byoc hosts');
        if (!user.is_admin) throw forbidden('only platform admins can create regular hosts');
      } else {
        if (body.team_id === undefined) throw badRequest('team_id is required for byoc hosts');
        teamId = parseIdParam('team', body.team_id, 'team_id');
        const team = await db
          .selectFrom('teams')
          .select(['id', 'is_byoc'])
          .where('id', '=', teamId)
          .where('deleted_at', 'is', null)
          .executeTakeFirst();
        const role = team ? await roleIn(user.id, team.id) : null;
        if (!team || (role === null && !user.is_admin)) throw notFound('team not found');
        if (!user.is_admin && role !== 'owner' && role !== 'admin') {
          throw forbidden('only owners and admins of the team can add its hosts');
        }
        if (!team.is_byoc) throw forbidden('the team does not have BYOC enabled', 'byoc_disabled');
      }
      const host = await db
        .insertInto('hosts')
        .values({
          type: body.type,
          team_id: teamId,
          provider: body.provider ?? '',
          availability_zone: body.availability_zone ?? '',
          created_by: user.id,
          metadata: '{}',
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      const registration_token = await issueRegistrationToken(host.id, user.id);
      audit.hostCreated(actorOf(request), { id: host.id, teamId, type: host.type });
      return reply.code(201).send({ host: hostJson(host), registration_token });
    },
  );

  app.get(
    '/v1/hosts',
    {
      preHandler: guards.requireTeamMember,
      schema: {
        summary: 'List hosts',
        description: "Platform admins see every host; others see their current team's BYOC hosts.",
        tags: ['hosts'],
        security,
        response: { 200: Type.Array(Type.Ref(Host)), ...errorResponses(401) },
      },
    },
    async (request) => {
      const { user, session } = sessionOf(request);
      let q = db.selectFrom('hosts').selectAll();
      if (!user.is_admin) q = q.where('team_id', '=', session.teamId);
      const rows = await q.orderBy('created_at', 'desc').orderBy('id').execute();
      return rows.map(hostJson);
    },
  );

  app.get(
    '/v1/hosts/:id',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Get a host',
        tags: ['hosts'],
        security,
        params: HostIdParams,
        response: { 200: Type.Ref(Host), ...errorResponses(400, 401, 404) },
      },
    },
    async (request) => hostJson(await loadHost(request, request.params.id, false)),
  );

  app.get(
    '/v1/hosts/:id/delete-preview',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Preview deleting a host',
        description: 'The capsules a forced delete would destroy. Changes nothing.',
        tags: ['hosts'],
        security,
        params: HostIdParams,
        response: {
          200: Type.Object(
            { host: Type.Ref(Host), sandbox_ids: Type.Array(Type.String()) },
            { title: 'HostDeletePreview' },
          ),
          ...errorResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => {
      const host = await loadHost(request, request.params.id, true);
      const ids = await activeCapsuleIds(host.id);
      return { host: hostJson(host), sandbox_ids: ids.map((id) => formatId('capsule', id)) };
    },
  );

  app.delete(
    '/v1/hosts/:id',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Delete a host',
        description:
          'Without `force=true`, a host with capsules (pending, starting, running, paused or missing) is not deleted: ' +
          'the 409 lists them. With `force=true` they are destroyed first, the agent is told to terminate, and its ' +
          'credentials are revoked.',
        tags: ['hosts'],
        security,
        params: HostIdParams,
        querystring: Type.Object(
          { force: Type.Optional(StringEnum(['true', 'false'])) },
          { additionalProperties: false },
        ),
        response: {
          204: Type.Null({ description: 'Deleted' }),
          409: Type.Ref(HostHasCapsulesError),
          ...errorResponses(400, 401, 403, 404),
        },
      },
    },
    async (request, reply) => {
      const host = await loadHost(request, request.params.id, true);
      const ids = await activeCapsuleIds(host.id);
      if (ids.length > 0 && request.query.force !== 'true') {
        return reply.code(409).send({
          error: {
            code: 'host_has_sandboxes',
            message: `host has ${ids.length} active capsule(s); delete with ?force=true to destroy them`,
            sandbox_ids: ids.map((id) => formatId('capsule', id)),
          },
        });
      }
      if (host.address && host.agent_token && host.status !== 'pending') {
        const client = ctx.hosts.get(host);
        const opts = { timeoutMs: 30_000 };
        // Best effort: an unreachable host cannot run them anyway, and its credentials die below.
        await Promise.allSettled(ids.map((id) => client.destroySandbox({ sandboxId: id }, opts)));
        await client.terminate({}, { timeoutMs: 10_000 }).catch(() => {});
      }
      await db.transaction().execute(async (trx) => {
        await trx
          .updateTable('sandboxes')
          .set({ status: 'stopped', last_updated: new Date() })
          .where('host_id', '=', host.id)
          .where('status', 'in', ACTIVE_CAPSULE_STATES)
          .execute();
        await trx.deleteFrom('hosts').where('id', '=', host.id).execute();
      });
      ctx.hosts.evict(host.id);
      audit.hostDeleted(actorOf(request), { id: host.id, teamId: host.team_id }, ids.length);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/v1/hosts/:id/token',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Issue a new registration token',
        description: 'For a host still pending (e.g. its first token expired). Earlier unused tokens stop working.',
        tags: ['hosts'],
        security,
        params: HostIdParams,
        response: { 201: Type.Ref(CreateHostResponse), ...errorResponses(400, 401, 403, 404, 409) },
      },
    },
    async (request, reply) => {
      const host = await loadHost(request, request.params.id, true);
      if (host.type === 'regular' && !sessionOf(request).user.is_admin) {
        throw forbidden('only platform admins can manage regular hosts');
      }
      if (host.status !== 'pending') throw conflict(`host is ${host.status}, not pending`, 'invalid_state');
      await db.deleteFrom('host_tokens').where('host_id', '=', host.id).where('used_at', 'is', null).execute();
      const registration_token = await issueRegistrationToken(host.id, sessionOf(request).user.id);
      audit.hostTokenRegenerated(actorOf(request), { id: host.id, teamId: host.team_id });
      return reply.code(201).send({ host: hostJson(host), registration_token });
    },
  );

  app.get(
    '/v1/hosts/:id/tags',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'List host tags',
        tags: ['hosts'],
        security,
        params: HostIdParams,
        response: { 200: Type.Array(Type.String()), ...errorResponses(400, 401, 404) },
      },
    },
    async (request) => {
      const host = await loadHost(request, request.params.id, false);
      const rows = await db
        .selectFrom('host_tags')
        .select('tag')
        .where('host_id', '=', host.id)
        .orderBy('tag')
        .execute();
      return rows.map((r) => r.tag);
    },
  );

  app.post(
    '/v1/hosts/:id/tags',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Add a tag to a host (idempotent)',
        tags: ['hosts'],
        security,
        params: HostIdParams,
        body: Type.Object({ tag: Type.String() }, { additionalProperties: false, title: 'AddTagRequest' }),
        response: { 204: Type.Null({ description: 'Tagged' }), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      const host = await loadHost(request, request.params.id, true);
      const tag = request.body.tag;
      if (!TAG_RE.test(tag)) {
        throw badRequest(
          'tag must be 1-64 characters: letters, digits and . _ : / - (starting with a letter or digit)',
        );
      }
      await db
        .insertInto('host_tags')
        .values({ host_id: host.id, tag })
        .onConflict((oc) => oc.doNothing())
        .execute();
      return reply.code(204).send(null);
    },
  );

  app.delete(
    '/v1/hosts/:id/tags/:tag',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Remove a tag from a host',
        tags: ['hosts'],
        security,
        params: Type.Object({ id: Type.String(), tag: Type.String() }),
        response: { 204: Type.Null({ description: 'Removed' }), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      const host = await loadHost(request, request.params.id, true);
      const removed = await db
        .deleteFrom('host_tags')
        .where('host_id', '=', host.id)
        .where('tag', '=', request.params.tag)
        .executeTakeFirst();
      if (Number(removed.numDeletedRows) === 0) throw notFound('tag not found on this host');
      return reply.code(204).send(null);
    },
  );

  // --- called by host agents ---

  app.post(
    '/v1/hosts/register',
    {
      schema: {
        summary: 'Register a host agent',
        description:
          'Called by the host agent on its first start with the one-time registration token. Records the ' +
          "machine's specs and address and the secret the control plane must present on every agent RPC, marks " +
          'the host online, and returns its host JWT and refresh token.',
        tags: ['hosts'],
        body: Type.Object(
          {
            token: Type.String({ minLength: 1, maxLength: 200 }),
            address: Type.String({ maxLength: 300, description: 'ip:port where the agent serves RPC' }),
            arch: Type.Optional(Type.String({ maxLength: 32 })),
            cpu_cores: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000 })),
            memory_mb: Type.Optional(Type.Integer({ minimum: 0, maximum: 2_000_000_000 })),
            disk_gb: Type.Optional(Type.Integer({ minimum: 0, maximum: 2_000_000_000 })),
            agent_token: Type.String({
              minLength: 32,
              maxLength: 200,
              pattern: '^[A-Za-z0-9_-]+$',
              description: 'Secret the control plane presents as `Authorization: Bearer` on every agent RPC.',
            }),
          },
          { additionalProperties: false, title: 'RegisterHostRequest' },
        ),
        response: { 201: Type.Ref(HostCredentials), ...errorResponses(400, 401) },
      },
    },
    async (request, reply) => {
      const body = request.body;
      if (!validAddress(body.address))
        throw badRequest('address must be ip:port (or hostname:port) with a port 1-65535');
      const host = await db.transaction().execute(async (trx) => {
        // Consuming the token is the compare-and-set: two agents racing with one token, one wins.
        const used = await trx
          .updateTable('host_tokens')
          .set({ used_at: new Date() })
          .where('token_hash', '=', hashToken(body.token))
          .where('used_at', 'is', null)
          .where('expires_at', '>', new Date())
          .returning('host_id')
          .executeTakeFirst();
        if (!used) throw unauthorized('invalid or expired registration token', 'invalid_token');
        const row = await trx
          .updateTable('hosts')
          .set({
            status: 'online',
            address: body.address,
            arch: body.arch ?? '',
            cpu_cores: body.cpu_cores ?? 0,
            memory_mb: body.memory_mb ?? 0,
            disk_gb: body.disk_gb ?? 0,
            agent_token: body.agent_token,
            last_heartbeat_at: new Date(),
            updated_at: new Date(),
          })
          .where('id', '=', used.host_id)
          .where('status', '=', 'pending')
          .returningAll()
          .executeTakeFirst();
        if (!row) throw unauthorized('invalid or expired registration token', 'invalid_token');
        return row;
      });
      const creds = await issueCredentials(host.id);
      ctx.hosts.evict(host.id);
      audit.hostRegistered({ id: host.id, teamId: host.team_id, address: host.address });
      return reply.code(201).send({ host: hostJson(host), ...creds });
    },
  );

  app.post(
    '/v1/hosts/auth/refresh',
    {
      schema: {
        summary: 'Exchange a refresh token for a new host JWT and refresh token',
        description:
          'Issue-then-revoke: the new refresh token is stored first and the token used here stays valid until the ' +
          'new one is used, so a crash between this answer and the agent saving it never locks the host out. ' +
          'Older tokens are revoked.',
        tags: ['hosts'],
        body: Type.Object(
          { refresh_token: Type.String({ minLength: 1, maxLength: 200 }) },
          { additionalProperties: false, title: 'RefreshHostTokenRequest' },
        ),
        response: { 200: Type.Ref(HostCredentials), ...errorResponses(400, 401) },
      },
    },
    async (request) => {
      const hash = hashToken(request.body.refresh_token);
      const current = await db
        .selectFrom('host_refresh_tokens as r')
        .innerJoin('hosts as h', 'h.id', 'r.host_id')
        .select(['r.id', 'r.host_id'])
        .where('r.token_hash', '=', hash)
        .where('r.revoked_at', 'is', null)
        .where('r.expires_at', '>', new Date())
        .executeTakeFirst();
      if (!current) throw unauthorized('invalid, expired or revoked refresh token', 'invalid_token');
      // Every other live token of the host is now superseded: the one just used proves the host saved it.
      await db
        .updateTable('host_refresh_tokens')
        .set({ revoked_at: new Date() })
        .where('host_id', '=', current.host_id)
        .where('id', '!=', current.id)
        .where('revoked_at', 'is', null)
        .execute();
      const creds = await issueCredentials(current.host_id);
      const host = await db.selectFrom('hosts').selectAll().where('id', '=', current.host_id).executeTakeFirstOrThrow();
      return { host: hostJson(host), ...creds };
    },
  );

  app.post(
    '/v1/hosts/:id/heartbeat',
    {
      schema: {
        summary: 'Host agent heartbeat',
        description: 'Authenticated with `X-Host-Token: <host JWT>`; the id must be the token’s host.',
        tags: ['hosts'],
        security: [{ hostTokenAuth: [] }],
        params: HostIdParams,
        response: { 204: Type.Null({ description: 'Recorded' }), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      const raw = request.headers['x-host-token'];
      const token = Array.isArray(raw) ? raw[0] : raw;
      if (!token) throw unauthorized('missing X-Host-Token header');
      const tokenHost = await hostTokens.verify(token);
      const id = parseIdParam('host', request.params.id, 'id');
      if (id !== tokenHost) throw forbidden('host token does not belong to this host');
      const before = await db.selectFrom('hosts').select(['status']).where('id', '=', id).executeTakeFirst();
      if (!before) throw notFound('host not found');
      const row = await db
        .updateTable('hosts')
        .set({
          last_heartbeat_at: new Date(),
          status: sql<HostRow['status']>`case when status = 'unreachable' then 'online' else status end`,
          updated_at: new Date(),
        })
        .where('id', '=', id)
        .returning(['status', 'team_id'])
        .executeTakeFirst();
      if (!row) throw notFound('host not found');
      if (before.status === 'unreachable' && row.status === 'online') {
        request.log.info({ host: formatId('host', id) }, 'host is back online');
        audit.hostMarkedUp({ id, teamId: row.team_id });
      }
      return reply.code(204).send(null);
    },
  );
}
