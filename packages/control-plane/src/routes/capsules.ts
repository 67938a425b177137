// /v1/capsules: the capsule API. Lifecycle, commands, processes and metrics
// here; files in capsules-files.ts, WebSockets in capsules-ws.ts, and the
// `{port}-{capsule id}.{domain}` port proxy in ../proxy/port-proxy.ts.
// Every route is team-scoped: another team's capsule is a 404.
import { Type } from '@sinclair/typebox';
import { formatId, isSafeName } from '@wrenn/contracts';
import type { Logger } from 'pino';
import { sql } from 'kysely';
import type { App, RouteContext } from '../server.js';
import { badRequest, notFound } from '../errors.js';
import { actorOf, teamOf } from '../auth/guards.js';
import type { CapsuleStatus, MetricTier } from '../db/schema.js';
import { errorResponses } from './schemas.js';
import {
  BackgroundExecResponse,
  CAPSULE_SCHEMAS,
  CAPSULE_SECURITY,
  IdParams,
  CAPSULE_STATES,
  Capsule,
  CapsuleMetrics,
  CapsuleStats,
  CreateCapsuleRequest,
  DEFAULTS,
  ExecRequest,
  SetTimeoutRequest,
  ExecResponse,
  METRIC_RANGES,
  ProcessListResponse,
  STATS_RANGES,
  type MetricRange,
} from '../capsules/schemas.js';
import { CapsuleService, capsuleJson } from '../capsules/service.js';
import { agentError } from '../capsules/agent-errors.js';
import { teamStats } from '../capsules/stats.js';
import { StringEnum } from './schemas.js';
import { capsuleFileRoutes } from './capsules-files.js';
import { capsuleWsRoutes } from './capsules-ws.js';
import { installPortProxy } from '../proxy/port-proxy.js';

const METRIC_TIER: Record<MetricRange, { tier: MetricTier; seconds: number }> = {
  '5m': { tier: '10m', seconds: 300 },
  '10m': { tier: '10m', seconds: 600 },
  '1h': { tier: '2h', seconds: 3600 },
  '2h': { tier: '2h', seconds: 7200 },
  '6h': { tier: '24h', seconds: 6 * 3600 },
  '12h': { tier: '24h', seconds: 12 * 3600 },
  '24h': { tier: '24h', seconds: 24 * 3600 },
};

const utf8 = new TextDecoder('utf-8', { fatal: true });
function isUtf8(b: Uint8Array): boolean {
  try {
    utf8.decode(b);
    return true;
  } catch {
    return false;
  }
}

/** `metadata` in list filters: `key=value` pairs joined by `&` (URL-encoded as one parameter), as in E2B. */
function parseMetadataFilter(raw: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(raw)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(k)) {
      throw badRequest(`metadata filter key "${k}" is invalid; use metadata=key%3Dvalue%26key2%3Dvalue2`);
    }
    out[k] = v;
  }
  if (Object.keys(out).length === 0) throw badRequest('metadata filter must hold at least one key=value pair');
  return out;
}

export function capsuleRoutes(app: App, ctx: RouteContext): void {
  const { db, guards } = ctx;
  const log = app.log as unknown as Logger;
  const svc = new CapsuleService({ db, hosts: ctx.hosts, audit: ctx.audit, scheduler: ctx.scheduler, log });
  for (const s of CAPSULE_SCHEMAS) app.addSchema(s);
  const security = CAPSULE_SECURITY;
  const tags = ['capsules'];
  const auth = guards.requireApiKeyOrUser;

  app.post(
    '/v1/capsules',
    {
      preHandler: auth,
      // Every field has a default: no body at all means "all defaults".
      preValidation: async (request) => {
        request.body ??= {};
      },
      schema: {
        summary: 'Create a capsule',
        description:
          'Schedules the capsule onto a host and returns once it is running (201). If the host fails to start ' +
          'it, the capsule is left in state `error` with the reason, and the response is the mapped error.',
        tags,
        security,
        body: CreateCapsuleRequest,
        response: { 201: Type.Ref(Capsule), ...errorResponses(400, 401, 403, 404, 409, 502, 503) },
      },
    },
    async (request, reply) => {
      const row = await svc.create(teamOf(request).id, actorOf(request), request.body);
      return reply.code(201).send(capsuleJson(row));
    },
  );

  app.get(
    '/v1/capsules',
    {
      preHandler: auth,
      schema: {
        summary: "The team's capsules, newest first",
        description:
          'Without `status`, stopped and failed (`error`) capsules are left out. `status` takes a comma-separated ' +
          'list of states; `metadata` takes URL-encoded `key=value` pairs joined by `&` (all must match).',
        tags,
        security,
        querystring: Type.Object(
          {
            status: Type.Optional(Type.String({ description: 'e.g. running,paused' })),
            metadata: Type.Optional(Type.String({ description: 'e.g. user%3Dalice%26env%3Ddev' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Array(Type.Ref(Capsule)), ...errorResponses(400, 401, 403) },
      },
    },
    async (request) => {
      const team = teamOf(request);
      let q = db.selectFrom('sandboxes').selectAll().where('team_id', '=', team.id);
      const { status, metadata } = request.query;
      if (status !== undefined) {
        const states = status.split(',').map((s) => s.trim());
        const bad = states.find((s) => !(CAPSULE_STATES as readonly string[]).includes(s));
        if (bad !== undefined) throw badRequest(`status "${bad}" is not one of ${CAPSULE_STATES.join(', ')}`);
        q = q.where('status', 'in', states as CapsuleStatus[]);
      } else {
        q = q.where('status', 'not in', ['stopped', 'error']);
      }
      if (metadata !== undefined) {
        q = q.where(sql<boolean>`metadata @> ${JSON.stringify(parseMetadataFilter(metadata))}::jsonb`);
      }
      const rows = await q.orderBy('created_at', 'desc').orderBy('id').limit(1000).execute();
      return rows.map(capsuleJson);
    },
  );

  app.get(
    '/v1/capsules/stats',
    {
      preHandler: auth,
      schema: {
        summary: "The team's capsule usage: now, 30-day peaks and a time series",
        tags,
        security,
        querystring: Type.Object(
          { range: Type.Optional(StringEnum(STATS_RANGES, { default: '1h' })) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Ref(CapsuleStats), ...errorResponses(400, 401, 403) },
      },
    },
    async (request) => teamStats(db, teamOf(request).id, request.query.range ?? '1h'),
  );

  app.get(
    '/v1/capsules/:id',
    {
      preHandler: auth,
      schema: {
        summary: 'A capsule',
        tags,
        security,
        params: IdParams,
        response: { 200: Type.Ref(Capsule), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request) => capsuleJson(await svc.get(teamOf(request).id, request.params.id)),
  );

  app.delete(
    '/v1/capsules/:id',
    {
      preHandler: auth,
      schema: {
        summary: 'Destroy a capsule',
        description: 'Its row stays (state `stopped`). Destroying a stopped capsule changes nothing.',
        tags,
        security,
        params: IdParams,
        response: { 204: Type.Null({ description: 'Destroyed' }), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      await svc.destroy(teamOf(request).id, actorOf(request), request.params.id);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/v1/capsules/:id/pause',
    {
      preHandler: auth,
      schema: {
        summary: 'Pause a running capsule',
        description: 'Freezes its processes; memory and files are kept. Its metrics are stored for later reading.',
        tags,
        security,
        params: IdParams,
        response: { 200: Type.Ref(Capsule), ...errorResponses(400, 401, 403, 404, 409, 503) },
      },
    },
    async (request) => capsuleJson(await svc.pause(teamOf(request).id, actorOf(request), request.params.id)),
  );

  app.post(
    '/v1/capsules/:id/resume',
    {
      preHandler: auth,
      schema: {
        summary: 'Resume a paused capsule',
        description: 'Resuming a running capsule returns it unchanged.',
        tags,
        security,
        params: IdParams,
        response: { 200: Type.Ref(Capsule), ...errorResponses(400, 401, 403, 404, 409, 503) },
      },
    },
    async (request) => capsuleJson(await svc.resume(teamOf(request).id, actorOf(request), request.params.id)),
  );

  app.post(
    '/v1/capsules/:id/ping',
    {
      preHandler: auth,
      schema: {
        summary: "Reset a running capsule's idle timer",
        description: 'Keeps a capsule with `timeout_sec` from being paused while it is idle.',
        tags,
        security,
        params: IdParams,
        response: { 204: Type.Null({ description: 'Timer reset' }), ...errorResponses(400, 401, 403, 404, 409, 503) },
      },
    },
    async (request, reply) => {
      await svc.ping(teamOf(request).id, request.params.id);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/v1/capsules/:id/timeout',
    {
      preHandler: auth,
      schema: {
        summary: "Change a capsule's idle timeout",
        description:
          'For a running capsule the new timeout counts from now; a paused capsule gets it when resumed. ' +
          '`timeout_sec: 0` means it is never paused for being idle.',
        tags,
        security,
        params: IdParams,
        body: SetTimeoutRequest,
        response: { 200: Type.Ref(Capsule), ...errorResponses(400, 401, 403, 404, 409, 503) },
      },
    },
    async (request) =>
      capsuleJson(await svc.setTimeout(teamOf(request).id, request.params.id, request.body.timeout_sec)),
  );

  app.post(
    '/v1/capsules/:id/exec',
    {
      preHandler: auth,
      schema: {
        summary: 'Run a command',
        description:
          'Foreground (default): waits for the command and returns its output (200); after `timeout_sec` it is ' +
          'killed (504). `background: true` starts it and returns its pid and tag at once (202). `envs`, `cwd` ' +
          'and `user` apply to both.',
        tags,
        security,
        params: IdParams,
        body: ExecRequest,
        response: {
          200: Type.Ref(ExecResponse),
          202: Type.Ref(BackgroundExecResponse),
          ...errorResponses(400, 401, 403, 404, 409, 503, 504),
        },
      },
    },
    async (request, reply) => {
      const live = await svc.running(teamOf(request).id, request.params.id);
      const b = request.body;
      const common = {
        sandboxId: live.wireId,
        cmd: b.cmd,
        args: b.args ?? [],
        envs: b.envs ?? {},
        cwd: b.cwd ?? '',
        user: b.user ?? '',
      };
      if (b.background) {
        let res;
        try {
          res = await live.client.startBackground({ ...common, tag: b.tag ?? '' }, { timeoutMs: 90_000 });
        } catch (err) {
          throw agentError(err, live.host.id);
        }
        await svc.touch(live.row.id);
        return reply.code(202).send({ sandbox_id: live.wireId, cmd: b.cmd, pid: res.pid, tag: res.tag });
      }
      if (b.tag !== undefined) throw badRequest('tag applies only to background commands (background: true)');
      const timeoutSec = b.timeout_sec ?? DEFAULTS.execTimeoutSec;
      let res;
      try {
        res = await live.client.exec({ ...common, timeoutSec }, { timeoutMs: (timeoutSec + 30) * 1000 });
      } catch (err) {
        throw agentError(err, live.host.id);
      } finally {
        await svc.touch(live.row.id);
      }
      const text = isUtf8(res.stdout) && isUtf8(res.stderr);
      const enc = (b: Uint8Array) =>
        Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString(text ? 'utf8' : 'base64');
      return reply.code(200).send({
        sandbox_id: live.wireId,
        cmd: b.cmd,
        stdout: enc(res.stdout),
        stderr: enc(res.stderr),
        exit_code: res.exitCode,
        duration_ms: Number(res.durationMs),
        encoding: text ? 'utf-8' : 'base64',
      });
    },
  );

  app.get(
    '/v1/capsules/:id/processes',
    {
      preHandler: auth,
      schema: {
        summary: 'Processes started through the API (exec, background, terminals) that are still running',
        tags,
        security,
        params: IdParams,
        response: { 200: Type.Ref(ProcessListResponse), ...errorResponses(400, 401, 403, 404, 409, 503) },
      },
    },
    async (request) => {
      const res = await svc.onRunning(teamOf(request).id, request.params.id, (live) =>
        live.client.listProcesses({ sandboxId: live.wireId }, { timeoutMs: 30_000 }),
      );
      return {
        processes: res.processes.map((p) => ({
          pid: p.pid,
          ...(p.tag ? { tag: p.tag } : {}),
          cmd: p.cmd,
          args: p.args,
        })),
      };
    },
  );

  app.delete(
    '/v1/capsules/:id/processes/:selector',
    {
      preHandler: auth,
      schema: {
        summary: 'Signal a process (by pid, or by tag)',
        tags,
        security,
        params: Type.Object({
          id: Type.String({ description: 'cl-… capsule id' }),
          selector: Type.String({ description: 'A pid (digits) or a tag' }),
        }),
        querystring: Type.Object(
          { signal: Type.Optional(StringEnum(['SIGKILL', 'SIGTERM'], { default: 'SIGKILL' })) },
          { additionalProperties: false },
        ),
        response: { 204: Type.Null({ description: 'Signal sent' }), ...errorResponses(400, 401, 403, 404, 409, 503) },
      },
    },
    async (request, reply) => {
      const selector = parseSelector(request.params.selector);
      await svc.onRunning(teamOf(request).id, request.params.id, (live) =>
        live.client.killProcess(
          { sandboxId: live.wireId, selector, signal: request.query.signal ?? 'SIGKILL' },
          { timeoutMs: 30_000 },
        ),
      );
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/v1/capsules/:id/metrics',
    {
      preHandler: auth,
      schema: {
        summary: "A capsule's CPU, memory and disk use over time",
        description:
          'Running: live points from the host (500 ms samples for 5m/10m, 30 s averages up to 2h, 5 min averages ' +
          'up to 24h). Paused: the points stored when it was paused. Other states: 404.',
        tags,
        security,
        params: IdParams,
        querystring: Type.Object(
          { range: Type.Optional(StringEnum(METRIC_RANGES, { default: '10m' })) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Ref(CapsuleMetrics), ...errorResponses(400, 401, 403, 404, 503) },
      },
    },
    async (request) => {
      const range = request.query.range ?? '10m';
      const row = await svc.get(teamOf(request).id, request.params.id);
      const wireId = formatId('capsule', row.id);
      const fromAgent = async () => {
        const live = await svc.live(row);
        let res;
        try {
          res = await live.client.getSandboxMetrics({ sandboxId: wireId, range }, { timeoutMs: 15_000 });
        } catch (err) {
          throw agentError(err, live.host.id);
        }
        return res.points.map((p) => ({
          timestamp_unix: Number(p.timestampUnix),
          cpu_pct: p.cpuPct,
          mem_bytes: Number(p.memBytes),
          disk_bytes: Number(p.diskBytes),
        }));
      };
      if (row.status === 'running') return { sandbox_id: wireId, range, points: await fromAgent() };
      if (row.status !== 'paused') {
        throw notFound(`capsule ${wireId} is ${row.status}: metrics exist only while it runs or is paused`);
      }
      const { tier, seconds } = METRIC_TIER[range];
      const points = db
        .selectFrom('sandbox_metric_points')
        .select(['ts', 'cpu_pct', 'mem_bytes', 'disk_bytes'])
        .where('sandbox_id', '=', row.id)
        .where('tier', '=', tier);
      const stored = await points
        .where('ts', '>=', String(Math.floor(Date.now() / 1000) - seconds))
        .orderBy('ts')
        .execute();
      if (stored.length === 0 && !(await points.limit(1).executeTakeFirst())) {
        // Paused by its host's idle timer, not through the API: the host still holds the points.
        return { sandbox_id: wireId, range, points: await fromAgent().catch(() => []) };
      }
      return {
        sandbox_id: wireId,
        range,
        points: stored.map((p) => ({
          timestamp_unix: Number(p.ts),
          cpu_pct: p.cpu_pct,
          mem_bytes: Number(p.mem_bytes),
          disk_bytes: Number(p.disk_bytes),
        })),
      };
    },
  );

  capsuleFileRoutes(app, ctx, svc);
  capsuleWsRoutes(app, ctx, svc);
  installPortProxy(app, ctx);
}

/** A numeric selector is a pid, anything else a tag. */
export function parseSelector(raw: string): { case: 'pid'; value: number } | { case: 'tag'; value: string } {
  if (/^\d+$/.test(raw)) {
    const pid = Number(raw);
    if (pid < 1 || pid > 4_194_304) throw badRequest(`pid ${raw} is out of range`);
    return { case: 'pid', value: pid };
  }
  if (!isSafeName(raw))
    throw badRequest(`"${raw}" is neither a pid nor a valid tag (1-64 letters, digits, ".", "_", "-")`);
  return { case: 'tag', value: raw };
}
