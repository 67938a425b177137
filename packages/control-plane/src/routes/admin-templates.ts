// /v1/admin/templates: platform admins see every team's templates and delete
// platform templates. The name addresses the platform's template only, so no
// `team` parameter: a team's own templates are that team's to delete
// (DELETE /v1/snapshots/{name}), and they go with the team when it is deleted.
import { Type } from '@sinclair/typebox';
import { formatId, PLATFORM_UUID } from '@wrenn/contracts';
import type { App, RouteContext } from '../server.js';
import { actorOf } from '../auth/guards.js';
import { forbidden, notFound } from '../errors.js';
import { errorResponses } from './schemas.js';
import { AdminTemplate, TemplateNameParams } from '../templates/schemas.js';
import { checkTemplateName, deleteTemplate, listAllTemplates, templateJson } from '../templates/store.js';

const security = [{ bearerAuth: [] }];
const tags = ['admin'];

export function adminTemplateRoutes(app: App, ctx: RouteContext): void {
  const { db, guards, audit } = ctx;

  app.get(
    '/v1/admin/templates',
    {
      preHandler: guards.requireAdmin,
      schema: {
        summary: 'Every template of every team (platform admins)',
        description: 'Newest first, platform templates included.',
        tags,
        security,
        response: { 200: Type.Array(Type.Ref(AdminTemplate)), ...errorResponses(401, 403) },
      },
    },
    async () =>
      (await listAllTemplates(db)).map((t) => ({
        ...templateJson(t),
        team_id: formatId('team', t.team_id),
        host_id: t.host_id ? formatId('host', t.host_id) : null,
        team_deleted: t.team_deleted,
      })),
  );

  app.delete(
    '/v1/admin/templates/:name',
    {
      preHandler: guards.requireAdmin,
      schema: {
        summary: 'Delete a platform template (platform admins)',
        description:
          'Removes its files from every online host, then the template. A host that holds the files but is ' +
          'unreachable, or any other host failure, is a 503/502 that keeps the template (try again when the host ' +
          'is back). The built-in `minimal` cannot be deleted (403). Team templates are not addressed here: ' +
          'their teams delete them, and deleting a team deletes its templates.',
        tags,
        security,
        params: TemplateNameParams,
        response: {
          204: Type.Null({ description: 'Deleted' }),
          ...errorResponses(400, 401, 403, 404, 502, 503),
        },
      },
    },
    async (request, reply) => {
      const name = checkTemplateName(request.params.name);
      const t = await db
        .selectFrom('templates')
        .selectAll()
        .where('team_id', '=', PLATFORM_UUID)
        .where('name', '=', name)
        .executeTakeFirst();
      if (!t) {
        throw notFound(
          `no platform template named "${name}" (team templates are deleted by their team)`,
          'template_not_found',
        );
      }
      if (t.id === PLATFORM_UUID) {
        throw forbidden(`"${name}" is the built-in template every host ships with; it cannot be deleted`);
      }
      await deleteTemplate(db, ctx.hosts, t);
      audit.templateDeleted(actorOf(request), { name, type: t.type, sizeBytes: Number(t.size_bytes) });
      return reply.code(204).send(null);
    },
  );
}
