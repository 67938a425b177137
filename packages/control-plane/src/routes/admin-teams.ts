// /v1/admin/teams: platform-admin actions on teams.
import { Type } from '@sinclair/typebox';
import { formatId, PLATFORM_UUID } from '@wrenn/contracts';
import type { App, RouteContext } from '../server.js';
import { actorOf } from '../auth/guards.js';
import { badRequest, notFound, parseIdParam } from '../errors.js';
import { errorResponses } from './schemas.js';

const security = [{ bearerAuth: [] }];
const tags = ['admin'];

const ByocBody = Type.Object(
  { enabled: Type.Boolean({ description: 'Must be true: BYOC cannot be switched off once a team may own hosts' }) },
  { additionalProperties: false },
);

export function adminTeamRoutes(app: App, ctx: RouteContext): void {
  const { db, guards, audit } = ctx;

  app.put(
    '/v1/admin/teams/:id/byoc',
    {
      preHandler: guards.requireAdmin,
      schema: {
        summary: "Enable a team's own (BYOC) hosts (platform admins)",
        description:
          "Lets the team's owner and admins register hosts of their own (`POST /v1/hosts` with `type: byoc`); " +
          'its capsules are then placed only on those hosts. One-way: `enabled: false` is a 400. Idempotent.',
        tags,
        security,
        params: Type.Object({ id: Type.String() }),
        body: ByocBody,
        response: {
          200: Type.Object({ id: Type.String(), name: Type.String(), is_byoc: Type.Boolean() }),
          ...errorResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => {
      const id = parseIdParam('team', request.params.id, 'id');
      if (!request.body.enabled) {
        throw badRequest('BYOC cannot be disabled once enabled (the team may own hosts); send {"enabled": true}');
      }
      const team = await db
        .selectFrom('teams')
        .select(['id', 'name', 'is_byoc'])
        .where('id', '=', id)
        .where('deleted_at', 'is', null)
        .executeTakeFirst();
      if (!team || team.id === PLATFORM_UUID) throw notFound(`team ${request.params.id} not found`, 'team_not_found');
      if (!team.is_byoc) {
        await db.updateTable('teams').set({ is_byoc: true }).where('id', '=', id).execute();
        audit.teamByocEnabled(actorOf(request), id, team.name);
      }
      return { id: formatId('team', id), name: team.name, is_byoc: true };
    },
  );
}
