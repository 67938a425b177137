// buildServer(deps): the control plane's HTTP API as a Fastify instance, not yet listening.
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type RawReplyDefaultExpression,
  type RawRequestDefaultExpression,
  type RawServerDefault,
} from 'fastify';
import cookie from '@fastify/cookie';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { Kysely } from 'kysely';
import YAML from 'yaml';
import type { Logger } from 'pino';
import type { DB } from './db/schema.js';
import type { GitHubOAuthConfig, PtyTimings } from './config.js';
import {
  ApiError,
  clientErrorHandler,
  formatSchemaErrors,
  frameworkErrorHandler,
  installErrorHandlers,
} from './errors.js';
import { AuditLogger } from './audit/logger.js';
import { ApiKeyAuthenticator, type ApiKeyAuthOptions, type RevocationBus } from './auth/api-keys.js';
import { SessionTokens } from './auth/jwt.js';
import { createGuards, type Guards } from './auth/guards.js';
import { OAuthRegistry } from './auth/oauth/provider.js';
import { GitHubProvider } from './auth/oauth/github.js';
import { OAuthStateSigner } from './auth/oauth/state.js';
import { SHARED_SCHEMAS } from './routes/schemas.js';
import { authRoutes } from './routes/auth.js';
import { oauthRoutes } from './routes/oauth.js';
import { meRoutes } from './routes/me.js';
import { teamRoutes } from './routes/teams.js';
import { userRoutes } from './routes/users.js';
import { apiKeyRoutes } from './routes/api-keys.js';
import { auditLogRoutes } from './routes/audit-logs.js';
import { hostRoutes } from './routes/hosts.js';
import { capsuleRoutes } from './routes/capsules.js';
import { adminTeamRoutes } from './routes/admin-teams.js';
import { snapshotRoutes } from './routes/snapshots.js';
import { buildRoutes } from './routes/builds.js';
import { BuildService } from './builds/service.js';
import { MemoryBuildQueue, type BuildQueue } from './builds/queue.js';
import { adminTemplateRoutes } from './routes/admin-templates.js';
import { HostClientPool } from './hosts/pool.js';
import { HostTokens } from './hosts/credentials.js';
import { LeastLoadedScheduler, type Scheduler } from './hosts/scheduler.js';

export type App = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

export interface ServerDeps {
  db: Kysely<DB>;
  log: Logger;
  jwtSecret: string;
  version: string;
  /** Public base URL of this control plane (OAuth callbacks, Secure cookies when https). */
  publicUrl?: string;
  /** Base URL of the dashboard that receives OAuth results. */
  oauthRedirectUrl?: string;
  github?: GitHubOAuthConfig;
  /** Extra or replacement providers (tests, later issues). */
  oauthProviders?: OAuthRegistry;
  revocationBus?: RevocationBus;
  apiKeyOptions?: ApiKeyAuthOptions;
  bodyLimit?: number;
  /** Connect clients for host agents (shared with background workers). */
  hostPool?: HostClientPool;
  scheduler?: Scheduler;
  /** Terminal ping interval and idle timeout (default 30 s and 120 s). */
  pty?: PtyTimings;
  /** Where submitted builds wait for a worker (default: an in-process queue). */
  buildQueue?: BuildQueue;
}

/** What the routes (and later issues' routes) share. */
export interface RouteContext {
  db: Kysely<DB>;
  audit: AuditLogger;
  apiKeys: ApiKeyAuthenticator;
  tokens: SessionTokens;
  guards: Guards;
  oauth: OAuthRegistry;
  oauthState: OAuthStateSigner;
  publicUrl?: string;
  oauthRedirectUrl?: string;
  version: string;
  hosts: HostClientPool;
  hostTokens: HostTokens;
  scheduler: Scheduler;
  pty: PtyTimings;
  builds: BuildService;
  /** Every route registered, in order (docs coverage checks, tooling). */
  routes: RegisteredRoute[];
}

export interface RegisteredRoute {
  method: string;
  url: string;
  /** Left out of the OpenAPI document (the documentation routes themselves). */
  hidden: boolean;
}

declare module 'fastify' {
  interface FastifyInstance {
    wrenn: RouteContext;
  }
}

const DASHBOARD_PLACEHOLDER = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Wrenn</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}
code{background:#f2f2f2;padding:.1rem .3rem;border-radius:3px}</style></head>
<body><h1>Wrenn</h1>
<p>The control plane is running. The web dashboard is not built yet.</p>
<ul><li>API reference: <a href="/docs">/docs</a> (OpenAPI document at <a href="/openapi.yaml">/openapi.yaml</a>)</li>
<li>Health: <a href="/health">/health</a></li>
<li>CLI: <code>npx wrenn list</code> with <code>WRENN_API_KEY</code> and <code>WRENN_BASE_URL</code> from <code>.wrenn/dev.env</code></li></ul>
</body></html>
`;

export const DEFAULT_BODY_LIMIT = 1024 * 1024;
export const DEFAULT_PTY_TIMINGS: PtyTimings = { pingIntervalMs: 30_000, idleTimeoutMs: 120_000 };

export async function buildServer(deps: ServerDeps): Promise<App> {
  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    // Fastify's two lines per request are replaced by the one onResponse line below.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.bodyLimit ?? DEFAULT_BODY_LIMIT,
    exposeHeadRoutes: false,
    // While closing, new requests get a 503 in our error shape (onRequest hook below), not Fastify's.
    return503OnClosing: false,
    frameworkErrors: frameworkErrorHandler,
    clientErrorHandler,
    forceCloseConnections: 'idle',
    requestTimeout: 120_000,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false } },
    schemaErrorFormatter: formatSchemaErrors,
  }).withTypeProvider<TypeBoxTypeProvider>();

  const tokens = new SessionTokens(deps.jwtSecret);
  const audit = new AuditLogger(deps.db, deps.log);
  const apiKeys = new ApiKeyAuthenticator(deps.db, deps.log, deps.apiKeyOptions, deps.revocationBus);
  const guards = createGuards({ db: deps.db, tokens, apiKeys });
  const oauth = deps.oauthProviders ?? new OAuthRegistry();
  if (deps.github && deps.publicUrl && !oauth.get('github')) {
    oauth.register(new GitHubProvider(deps.github, `${deps.publicUrl}/auth/oauth/github/callback`));
  }
  const ctx: RouteContext = {
    db: deps.db,
    audit,
    apiKeys,
    tokens,
    guards,
    oauth,
    oauthState: new OAuthStateSigner(deps.jwtSecret),
    publicUrl: deps.publicUrl,
    oauthRedirectUrl: deps.oauthRedirectUrl ?? deps.publicUrl,
    version: deps.version,
    hosts: deps.hostPool ?? new HostClientPool(),
    hostTokens: new HostTokens(deps.jwtSecret),
    scheduler: deps.scheduler ?? new LeastLoadedScheduler(deps.db),
    pty: deps.pty ?? DEFAULT_PTY_TIMINGS,
    builds: new BuildService({ db: deps.db, audit, queue: deps.buildQueue ?? new MemoryBuildQueue(), log: deps.log }),
    routes: [],
  };
  app.decorate('wrenn', ctx);
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) {
      ctx.routes.push({
        method,
        url: route.url,
        hidden: Boolean((route.schema as { hide?: boolean } | undefined)?.hide),
      });
    }
  });
  app.decorateRequest('auth', null);
  app.decorateRequest('team', null);

  installErrorHandlers(app);

  // One log line per request, with credentials redacted by the logger's serializers.
  app.addHook('onResponse', (request, reply, done) => {
    request.log.info({ req: request, res: reply, responseTime: Math.round(reply.elapsedTime) }, 'request completed');
    done();
  });

  // Shutting down: answers still being written close their connection, so keep-alive
  // clients cannot hold the process open once their last request is done.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', (_request, _reply, done) => {
    done(closing ? new ApiError(503, 'unavailable', 'the server is shutting down') : undefined);
  });
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) reply.header('connection', 'close');
    done(null, payload);
  });

  apiKeys.start();
  app.addHook('onClose', async () => {
    await apiKeys.stop();
    await audit.drain();
  });

  for (const s of SHARED_SCHEMAS) app.addSchema(s);

  await app.register(cookie);
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Wrenn API',
        description: 'Self-hostable sandboxes (capsules) for AI agents and developers.',
        version: deps.version,
      },
      servers: deps.publicUrl ? [{ url: deps.publicUrl }] : [],
      components: {
        securitySchemes: {
          bearerAuth: {
            type: 'http',
            scheme: 'bearer',
            bearerFormat: 'JWT',
            description: 'Session JWT from /v1/auth/login or /v1/auth/signup, valid for 6 hours.',
          },
          apiKeyAuth: {
            type: 'apiKey',
            in: 'header',
            name: 'X-API-Key',
            description: 'API key from POST /v1/api-keys.',
          },
          hostTokenAuth: {
            type: 'apiKey',
            in: 'header',
            name: 'X-Host-Token',
            description: 'Host JWT from POST /v1/hosts/register or /v1/hosts/auth/refresh (host agents only).',
          },
        },
      },
    },
    refResolver: { buildLocalReference: (json, _base, _fragment, i) => String(json.$id ?? `def-${i}`) },
  });
  // The page's assets are served by the plugin itself, never from a CDN.
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: true });

  let openapiYaml: string | undefined;
  app.get('/openapi.yaml', { schema: { hide: true } }, async (_request, reply) => {
    // Plain YAML without anchors/aliases, which some OpenAPI tools do not follow.
    openapiYaml ??= YAML.stringify(app.swagger(), { aliasDuplicateObjects: false });
    return reply.type('application/yaml; charset=utf-8').send(openapiYaml);
  });

  app.get(
    '/health',
    {
      schema: {
        summary: 'Liveness check',
        tags: ['misc'],
        response: { 200: Type.Object({ status: Type.Literal('ok'), version: Type.String() }) },
      },
    },
    async () => ({ status: 'ok' as const, version: deps.version }),
  );

  // The dashboard's place until it is built: says where the API and its docs are.
  app.get('/', { schema: { hide: true } }, async (_request, reply) =>
    reply.type('text/html; charset=utf-8').send(DASHBOARD_PLACEHOLDER),
  );

  authRoutes(app, ctx);
  oauthRoutes(app, ctx);
  meRoutes(app, ctx);
  teamRoutes(app, ctx);
  userRoutes(app, ctx);
  apiKeyRoutes(app, ctx);
  auditLogRoutes(app, ctx);
  hostRoutes(app, ctx);
  capsuleRoutes(app, ctx);
  snapshotRoutes(app, ctx);
  adminTeamRoutes(app, ctx);
  buildRoutes(app, ctx);
  adminTemplateRoutes(app, ctx); // after snapshotRoutes, which registers the template schemas

  return app;
}
