// /v1/teams: teams, members and roles. A team the caller does not belong to is
// always a 404 (never a 403), so team ids reveal nothing. Roles come from the database.
import { Type } from '@sinclair/typebox';
import { formatId, TEAM_NAME_RE } from '@wrenn/contracts';
import type { Logger } from 'pino';
import type { App, RouteContext } from '../server.js';
import { purgeDeletedTeamTemplates } from '../templates/store.js';
import type { TeamRole } from '../db/schema.js';
import { badRequest, conflict, forbidden, notFound, parseIdParam } from '../errors.js';
import { actorOf, sessionOf } from '../auth/guards.js';
import {
  createTeamWithOwner,
  getMembership,
  isUniqueViolation,
  normalizeEmail,
  type Db,
} from '../services/accounts.js';
import { StringEnum, TeamDetail, TeamMember, TeamWithRole, errorResponses } from './schemas.js';

const security = [{ bearerAuth: [] }];
const IdParams = Type.Object({ id: Type.String({ description: 'team-…' }) });
const MemberParams = Type.Object({
  id: Type.String({ description: 'team-…' }),
  uid: Type.String({ description: 'usr-…' }),
});
const TeamName = Type.String({ minLength: 1, maxLength: 200, description: "1–128 of A-Z a-z 0-9 space _ - @ '" });

function teamName(raw: string): string {
  const name = raw.trim();
  if (!TEAM_NAME_RE.test(name)) {
    throw badRequest("name must be 1–128 characters of letters, digits, spaces and _ - @ '");
  }
  return name;
}

function teamJson(t: { id: string; name: string; slug: string; is_byoc: boolean; created_at: Date }) {
  return {
    id: formatId('team', t.id),
    name: t.name,
    slug: t.slug,
    is_byoc: t.is_byoc,
    created_at: t.created_at.toISOString(),
  };
}

async function listMembers(db: Db, teamId: string) {
  const rows = await db
    .selectFrom('users_teams as m')
    .innerJoin('users as u', 'u.id', 'm.user_id')
    .select(['u.id', 'u.name', 'u.email', 'm.role', 'm.created_at'])
    .where('m.team_id', '=', teamId)
    .orderBy('m.created_at')
    .orderBy('u.email')
    .execute();
  return rows.map((r) => ({
    user_id: formatId('user', r.id),
    name: r.name,
    email: r.email,
    role: r.role,
    joined_at: r.created_at.toISOString(),
  }));
}

export function teamRoutes(app: App, ctx: RouteContext): void {
  const { db, audit, guards } = ctx;
  const log = app.log as unknown as Logger;

  /** The caller's membership in the team named by the `id` parameter; 404 when there is none. */
  async function memberOf(userId: string, idParam: string): Promise<{ teamId: string; role: TeamRole }> {
    const teamId = parseIdParam('team', idParam, 'id');
    const m = await getMembership(db, userId, teamId);
    if (!m) throw notFound('team not found', 'team_not_found');
    return m;
  }

  function requireRole(role: TeamRole, allowed: TeamRole[], what: string): void {
    if (!allowed.includes(role)) throw forbidden(`${allowed.join(' or ')} role required to ${what}`);
  }

  app.get(
    '/v1/teams',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: "The caller's teams, with their role in each",
        tags: ['teams'],
        security,
        response: { 200: Type.Array(Type.Ref(TeamWithRole)), ...errorResponses(401, 403) },
      },
    },
    async (request) => {
      const { user } = sessionOf(request);
      const rows = await db
        .selectFrom('users_teams as m')
        .innerJoin('teams as t', 't.id', 'm.team_id')
        .select(['t.id', 't.name', 't.slug', 't.is_byoc', 't.created_at', 'm.role'])
        .where('m.user_id', '=', user.id)
        .where('t.deleted_at', 'is', null)
        .orderBy('m.created_at')
        .orderBy('t.id')
        .execute();
      return rows.map((r) => ({ ...teamJson(r), role: r.role }));
    },
  );

  app.post(
    '/v1/teams',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Create a team (the caller becomes its owner)',
        tags: ['teams'],
        security,
        body: Type.Object({ name: TeamName }, { additionalProperties: false, title: 'CreateTeamRequest' }),
        response: { 201: Type.Ref(TeamWithRole), ...errorResponses(400, 401, 403) },
      },
    },
    async (request, reply) => {
      const { user } = sessionOf(request);
      const name = teamName(request.body.name);
      const team = await db.transaction().execute((trx) => createTeamWithOwner(trx, user.id, name, false));
      audit.teamCreated(actorOf(request), team.id, team.name);
      return reply.code(201).send({ ...teamJson(team), role: 'owner' as const });
    },
  );

  app.get(
    '/v1/teams/:id',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'A team and its members',
        tags: ['teams'],
        security,
        params: IdParams,
        response: { 200: Type.Ref(TeamDetail), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request) => {
      const { user } = sessionOf(request);
      const { teamId } = await memberOf(user.id, request.params.id);
      const team = await db.selectFrom('teams').selectAll().where('id', '=', teamId).executeTakeFirstOrThrow();
      return { team: teamJson(team), members: await listMembers(db, teamId) };
    },
  );

  app.patch(
    '/v1/teams/:id',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Rename a team (owner or admin)',
        tags: ['teams'],
        security,
        params: IdParams,
        body: Type.Object({ name: TeamName }, { additionalProperties: false, title: 'RenameTeamRequest' }),
        response: { 204: Type.Null({ description: 'Renamed' }), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      const { user } = sessionOf(request);
      const m = await memberOf(user.id, request.params.id);
      requireRole(m.role, ['owner', 'admin'], 'rename the team');
      const name = teamName(request.body.name);
      const old = await db.selectFrom('teams').select('name').where('id', '=', m.teamId).executeTakeFirstOrThrow();
      await db.updateTable('teams').set({ name }).where('id', '=', m.teamId).execute();
      if (old.name !== name) audit.teamRenamed(actorOf(request), m.teamId, old.name, name);
      return reply.code(204).send(null);
    },
  );

  app.delete(
    '/v1/teams/:id',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Delete a team (owner only)',
        description:
          'Soft delete: the team disappears for everyone, its API keys stop working at once, its slug stays ' +
          'reserved. Its templates are removed from the hosts in the background (a host that is down is ' +
          'cleaned up when it is back).',
        tags: ['teams'],
        security,
        params: IdParams,
        response: { 204: Type.Null({ description: 'Deleted' }), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      const { user } = sessionOf(request);
      const m = await memberOf(user.id, request.params.id);
      requireRole(m.role, ['owner'], 'delete the team');
      const { name, keyIds } = await db.transaction().execute(async (trx) => {
        const t = await trx
          .updateTable('teams')
          .set({ deleted_at: new Date() })
          .where('id', '=', m.teamId)
          .where('deleted_at', 'is', null)
          .returning('name')
          .executeTakeFirst();
        if (!t) throw notFound('team not found', 'team_not_found');
        const keys = await trx.deleteFrom('team_api_keys').where('team_id', '=', m.teamId).returning('id').execute();
        return { name: t.name, keyIds: keys.map((k) => k.id) };
      });
      ctx.apiKeys.revoked(keyIds);
      audit.teamDeleted(actorOf(request), m.teamId, name);
      // The team's templates go in the background: a host that is down must not fail the delete, and
      // the host monitor retries what is left (deleted_at marks them) until every host has answered.
      void purgeDeletedTeamTemplates(db, ctx.hosts, log, m.teamId).catch((err: unknown) =>
        log.warn({ err }, "removing a deleted team's templates failed; the host monitor retries"),
      );
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/v1/teams/:id/members',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: "A team's members",
        tags: ['teams'],
        security,
        params: IdParams,
        response: { 200: Type.Array(Type.Ref(TeamMember)), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request) => {
      const { user } = sessionOf(request);
      const { teamId } = await memberOf(user.id, request.params.id);
      return listMembers(db, teamId);
    },
  );

  app.post(
    '/v1/teams/:id/members',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Add a member by email (owner or admin)',
        description: 'The user must have an active account; they join at once as `member`.',
        tags: ['teams'],
        security,
        params: IdParams,
        body: Type.Object(
          { email: Type.String({ minLength: 1, maxLength: 320 }) },
          { additionalProperties: false, title: 'AddMemberRequest' },
        ),
        response: { 201: Type.Ref(TeamMember), ...errorResponses(400, 401, 403, 404, 409) },
      },
    },
    async (request, reply) => {
      const { user } = sessionOf(request);
      const m = await memberOf(user.id, request.params.id);
      requireRole(m.role, ['owner', 'admin'], 'add members');
      const email = normalizeEmail(request.body.email);
      if (!email) throw badRequest('email is not a valid email address');
      const target = await db
        .selectFrom('users')
        .select(['id', 'name', 'email'])
        .where('email', '=', email)
        .where('status', '=', 'active')
        .executeTakeFirst();
      if (!target) throw notFound('no account with this email', 'user_not_found');
      let row;
      try {
        row = await db
          .insertInto('users_teams')
          .values({ user_id: target.id, team_id: m.teamId, role: 'member', is_default: false })
          .onConflict((oc) => oc.columns(['team_id', 'user_id']).doNothing())
          .returning(['created_at'])
          .executeTakeFirst();
      } catch (err) {
        if (isUniqueViolation(err)) row = undefined;
        else throw err;
      }
      if (!row) throw conflict('this user is already a member of the team', 'already_member');
      audit.memberAdded(actorOf(request), m.teamId, target.id, target.email, 'member');
      return reply.code(201).send({
        user_id: formatId('user', target.id),
        name: target.name,
        email: target.email,
        role: 'member' as const,
        joined_at: row.created_at.toISOString(),
      });
    },
  );

  /** The target member, checked to exist and not be the owner. */
  async function targetMember(teamId: string, uidParam: string, what: string) {
    const uid = parseIdParam('user', uidParam, 'uid');
    const target = await db
      .selectFrom('users_teams as m')
      .innerJoin('users as u', 'u.id', 'm.user_id')
      .select(['m.user_id', 'm.role', 'u.email'])
      .where('m.team_id', '=', teamId)
      .where('m.user_id', '=', uid)
      .executeTakeFirst();
    if (!target) throw notFound('this user is not a member of the team', 'member_not_found');
    if (target.role === 'owner') throw forbidden(`the team owner cannot be ${what}`, 'owner_protected');
    return target;
  }

  app.patch(
    '/v1/teams/:id/members/:uid',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: "Change a member's role (owner or admin)",
        description: 'Roles `admin` or `member`; the owner cannot be changed.',
        tags: ['teams'],
        security,
        params: MemberParams,
        body: Type.Object(
          { role: StringEnum(['admin', 'member']) },
          { additionalProperties: false, title: 'UpdateMemberRequest' },
        ),
        response: { 204: Type.Null({ description: 'Role updated' }), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      const { user } = sessionOf(request);
      const m = await memberOf(user.id, request.params.id);
      requireRole(m.role, ['owner', 'admin'], 'change roles');
      const target = await targetMember(m.teamId, request.params.uid, 'demoted');
      const role = request.body.role;
      if (target.role !== role) {
        await db
          .updateTable('users_teams')
          .set({ role })
          .where('team_id', '=', m.teamId)
          .where('user_id', '=', target.user_id)
          .where('role', '<>', 'owner')
          .execute();
        audit.memberRoleChanged(actorOf(request), m.teamId, target.user_id, target.role, role);
      }
      return reply.code(204).send(null);
    },
  );

  app.delete(
    '/v1/teams/:id/members/:uid',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Remove a member (owner or admin)',
        description: 'The owner cannot be removed.',
        tags: ['teams'],
        security,
        params: MemberParams,
        response: { 204: Type.Null({ description: 'Removed' }), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      const { user } = sessionOf(request);
      const m = await memberOf(user.id, request.params.id);
      requireRole(m.role, ['owner', 'admin'], 'remove members');
      const target = await targetMember(m.teamId, request.params.uid, 'removed');
      await db
        .deleteFrom('users_teams')
        .where('team_id', '=', m.teamId)
        .where('user_id', '=', target.user_id)
        .where('role', '<>', 'owner')
        .execute();
      audit.memberRemoved(actorOf(request), m.teamId, target.user_id, target.email);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/v1/teams/:id/leave',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Leave a team',
        description: 'The owner cannot leave; they delete the team instead.',
        tags: ['teams'],
        security,
        params: IdParams,
        response: { 204: Type.Null({ description: 'Left the team' }), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      const { user } = sessionOf(request);
      const m = await memberOf(user.id, request.params.id);
      if (m.role === 'owner')
        throw forbidden('the owner cannot leave the team; delete it instead', 'owner_cannot_leave');
      await db
        .deleteFrom('users_teams')
        .where('team_id', '=', m.teamId)
        .where('user_id', '=', user.id)
        .where('role', '<>', 'owner')
        .execute();
      audit.memberLeft(actorOf(request), m.teamId);
      return reply.code(204).send(null);
    },
  );
}
