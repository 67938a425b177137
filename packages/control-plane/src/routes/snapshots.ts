// /v1/snapshots: templates a team can create capsules from. POST saves a
// capsule's file system as a team template, GET lists the team's and the
// platform's templates, DELETE removes one of the team's own.
import { Type } from '@sinclair/typebox';
import type { Logger } from 'pino';
import type { App, RouteContext } from '../server.js';
import { actorOf, teamOf } from '../auth/guards.js';
import { errorResponses } from './schemas.js';
import { CAPSULE_SECURITY } from '../capsules/schemas.js';
import { CapsuleService } from '../capsules/service.js';
import {
  CreateSnapshotQuery,
  CreateSnapshotRequest,
  ListTemplatesQuery,
  TEMPLATE_SCHEMAS,
  Template,
  TemplateNameParams,
} from '../templates/schemas.js';
import { listTemplates, templateJson } from '../templates/store.js';
import { SnapshotService } from '../templates/snapshots.js';

export function snapshotRoutes(app: App, ctx: RouteContext): void {
  const { db, guards } = ctx;
  const log = app.log as unknown as Logger;
  const capsules = new CapsuleService({ db, hosts: ctx.hosts, audit: ctx.audit, scheduler: ctx.scheduler, log });
  const svc = new SnapshotService({ db, hosts: ctx.hosts, audit: ctx.audit, capsules, log });
  for (const s of TEMPLATE_SCHEMAS) app.addSchema(s);
  const security = CAPSULE_SECURITY;
  const tags = ['templates'];
  const auth = guards.requireApiKeyOrUser;

  app.post(
    '/v1/snapshots',
    {
      preHandler: auth,
      schema: {
        summary: "Save a capsule's file system as a template",
        description:
          'The capsule (running or paused) is frozen while its file system — its changes over the template it ' +
          'came from — is copied, then left as it was. Memory and running processes are not captured: capsules ' +
          "made from the snapshot boot fresh on those files, with the snapshot's vCPUs and memory and the " +
          "defaults (user, environment) of the capsule's own template. The name defaults to `template-{8 hex}`; " +
          'a platform template name is refused (409 `name_reserved`), and a name your team already uses is ' +
          '409 `template_name_taken` unless `overwrite=true`, which deletes the old template first. The ' +
          'template lives on the host of the capsule: capsules made from it are placed on that host.',
        tags,
        security,
        querystring: CreateSnapshotQuery,
        body: CreateSnapshotRequest,
        response: { 201: Type.Ref(Template), ...errorResponses(400, 401, 403, 404, 409, 502, 503) },
      },
    },
    async (request, reply) => {
      const row = await svc.create(
        teamOf(request).id,
        actorOf(request),
        request.body,
        request.query.overwrite === 'true',
      );
      return reply.code(201).send(templateJson(row));
    },
  );

  app.get(
    '/v1/snapshots',
    {
      preHandler: auth,
      schema: {
        summary: "Templates you can create capsules from: your team's and the platform's",
        tags,
        security,
        querystring: ListTemplatesQuery,
        response: { 200: Type.Array(Type.Ref(Template)), ...errorResponses(400, 401, 403) },
      },
    },
    async (request) => (await listTemplates(db, teamOf(request).id, request.query.type)).map(templateJson),
  );

  app.delete(
    '/v1/snapshots/:name',
    {
      preHandler: auth,
      schema: {
        summary: "Delete one of your team's templates",
        description:
          'Removes its files from the hosts, then the template. Platform templates cannot be deleted (403). ' +
          'Capsules already made from it keep running.',
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
      await svc.delete(teamOf(request).id, actorOf(request), request.params.name);
      return reply.code(204).send(null);
    },
  );
}
