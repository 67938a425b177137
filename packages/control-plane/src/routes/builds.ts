// /v1/admin/builds: platform templates built from recipes (platform admins only).
import { Type } from '@sinclair/typebox';
import multipart from '@fastify/multipart';
import type { App, RouteContext } from '../server.js';
import { actorOf } from '../auth/guards.js';
import { ApiError, badRequest } from '../errors.js';
import { errorResponses } from './schemas.js';
import { MAX_ARCHIVE_BYTES } from '../builds/archive.js';
import { Build, BUILD_SCHEMAS, BuildIdParams, CreateBuildRequest, ListBuildsQuery } from '../builds/schemas.js';
import { buildJson } from '../builds/service.js';
import type { BuildStatus } from '../db/schema.js';

const MAX_CONFIG_BYTES = 1024 * 1024;

const DESCRIPTION = `Queues a build of a platform template. The build runs in its own capsule, made from \`base_template\`,
step by step; the build's \`logs\` get one entry per step as it finishes.

Send JSON, or \`multipart/form-data\` with a \`config\` part (this JSON) and an optional \`archive\` part
(tar, tar.gz or zip, at most 100 MB) for COPY. The whole request is checked first: a bad recipe line
(\`recipe line N: …\`), healthcheck, or archive (entries outside it, links pointing out) is a 400 and
nothing is created; a platform template of that name already existing is 409.

Recipe instructions (one per element, keywords case-insensitive):
- \`RUN [--timeout=<duration>] <shell>\`: runs as the current user in WORKDIR with the ENV; a non-zero exit fails the build (default timeout 30 s).
- \`ENV KEY=VALUE\`: \`$VAR\`/\`\${VAR}\` expand from the current environment, \`$$\` is \`$\`, unknown variables are empty.
- \`WORKDIR <path>\`: created if missing (mkdir -p); relative paths resolve against the current WORKDIR.
- \`USER <name>\`: created if missing (with passwordless sudo); later steps run as that user. The last USER is the template's default user.
- \`COPY <src>... <dst>\`: from the archive's root (no absolute paths or \`..\`); a relative dst resolves against WORKDIR; owned by the current user.
- \`START <shell>\`: starts a background process. **Processes cannot be saved in a template** (capsules are containers; no memory snapshots), so the template remembers its START commands, with the user, directory and environment of that step, and **every capsule created from it starts them again** once it is up.

Unless \`skip_pre_post\`, pre-build steps (\`RUN apt-get update\`, \`USER wrenn-user\`, \`WORKDIR /home/wrenn-user\`) run first and
post-build steps (\`apt-get clean\`, removing apt lists and the archive files) last. With a \`healthcheck\`
(\`[--interval=3s] [--timeout=10s] [--start-period=0s] [--retries=0] <cmd>\`, 0 retries = until start_period + (retries+1) × interval)
the build waits until it passes and saves a \`snapshot\` template; without one, a \`base\` template. The
template keeps the last USER and the variables set by ENV as its defaults, and lives on the build's host.
The build capsule is destroyed in every outcome.`;

export function buildRoutes(app: App, ctx: RouteContext): void {
  const svc = ctx.builds;
  for (const s of BUILD_SCHEMAS) app.addSchema(s);
  const auth = ctx.guards.requireAdmin;
  const security = [{ bearerAuth: [] }];
  const tags = ['admin'];

  void app.register(async (sub) => {
    await sub.register(multipart, { limits: { fields: 2, files: 2, parts: 4, fieldSize: MAX_CONFIG_BYTES } });
    // JSON and multipart bodies are both checked in the handler, with the same schema.
    const acceptAll = () => () => true;
    sub.post(
      '/v1/admin/builds',
      {
        preHandler: auth,
        validatorCompiler: acceptAll,
        bodyLimit: MAX_CONFIG_BYTES,
        schema: {
          summary: 'Build a platform template from a recipe',
          description: DESCRIPTION,
          tags,
          security,
          consumes: ['application/json', 'multipart/form-data'],
          body: Type.Ref(CreateBuildRequest),
          response: { 201: Type.Ref(Build), ...errorResponses(400, 401, 403, 409, 413, 415, 503) },
        },
      },
      async (request, reply) => {
        let config: unknown;
        let archive: Buffer | null = null;
        let where = 'body';
        if (request.isMultipart()) {
          where = 'config';
          if (Number(request.headers['content-length']) > MAX_ARCHIVE_BYTES + MAX_CONFIG_BYTES) throw tooLarge();
          let configText: string | undefined;
          try {
            for await (const part of request.parts({ limits: { fileSize: MAX_ARCHIVE_BYTES } })) {
              if (part.type === 'field') {
                if (part.fieldname !== 'config') throw badRequest(`unexpected field "${part.fieldname}"`);
                configText = String(part.value);
              } else if (part.fieldname === 'config') {
                configText = (await part.toBuffer()).toString('utf8');
              } else if (part.fieldname === 'archive') {
                archive = await part.toBuffer();
              } else {
                throw badRequest(`unexpected part "${part.fieldname}"; send "config" and optionally "archive"`);
              }
            }
          } catch (err) {
            if ((err as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw tooLarge();
            throw err;
          }
          if (configText === undefined) throw badRequest('multipart body needs a "config" part with the build as JSON');
          try {
            config = JSON.parse(configText);
          } catch {
            throw badRequest('config is not valid JSON');
          }
        } else {
          config = request.body;
        }
        const body = svc.parseConfig(config, where);
        const row = await svc.submit(actorOf(request), body, archive);
        return reply.code(201).send(buildJson(row));
      },
    );
  });

  app.get(
    '/v1/admin/builds',
    {
      preHandler: auth,
      schema: {
        summary: 'List template builds, newest first',
        tags,
        security,
        querystring: ListBuildsQuery,
        response: { 200: Type.Array(Type.Ref(Build)), ...errorResponses(400, 401, 403) },
      },
    },
    async (request) => {
      const limit = request.query.limit === undefined ? 50 : Number(request.query.limit);
      if (!(limit >= 1 && limit <= 200)) throw badRequest('limit must be between 1 and 200');
      const rows = await svc.list({ status: request.query.status as BuildStatus | undefined, limit });
      return rows.map(buildJson);
    },
  );

  app.get(
    '/v1/admin/builds/:id',
    {
      preHandler: auth,
      schema: {
        summary: 'A template build, with its per-step logs',
        tags,
        security,
        params: BuildIdParams,
        response: { 200: Type.Ref(Build), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request) => buildJson(await svc.get(request.params.id)),
  );

  app.post(
    '/v1/admin/builds/:id/cancel',
    {
      preHandler: auth,
      schema: {
        summary: 'Cancel a pending or running build',
        description:
          'The build becomes `cancelled` at once; its running step is stopped and its capsule destroyed within ' +
          'a few seconds, by whichever control plane runs it. A finished build is 400.',
        tags,
        security,
        params: BuildIdParams,
        response: { 200: Type.Ref(Build), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request) => buildJson(await svc.cancel(actorOf(request), request.params.id)),
  );
}

function tooLarge(): ApiError {
  return new ApiError(413, 'too_large', 'the archive is larger than 100 MB');
}
