// WebSocket routes of a capsule: exec/stream, pty and processes/{selector}/stream.
//
// Authentication: X-API-Key or a Bearer JWT on the upgrade request (then an
// unknown or stopped capsule is a plain HTTP 404/409 before any upgrade), or,
// for browsers that cannot set headers, a first message
// `{"type":"auth","token":"<JWT or API key>"}` within 5 s.
// Messages are JSON; errors are `{"type":"error","data":"…"}` then a close.
import { randomBytes } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import websocket from '@fastify/websocket';
import type { FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import { isSafeName } from '@wrenn/contracts';
import type { ExecStreamResponse } from '@wrenn/contracts/gen/hostagent/v1/hostagent_pb';
import type { App, RouteContext } from '../server.js';
import { ApiError, unauthorized } from '../errors.js';
import type { TeamContext } from '../auth/guards.js';
import { errorResponses, StringEnum } from './schemas.js';
import { CAPSULE_SECURITY, IdParams, LIMITS } from '../capsules/schemas.js';
import type { CapsuleService, LiveCapsule } from '../capsules/service.js';
import { agentError } from '../capsules/agent-errors.js';
import { parseSelector } from './capsules.js';

export const WS_AUTH_TIMEOUT_MS = 5_000;
/** How long a client may take to send its `start`/`connect` message. */
const WS_START_TIMEOUT_MS = 30_000;
/** Terminal input waiting to be sent beyond this is dropped (the client is typing faster than the capsule reads). */
const PTY_MAX_PENDING_INPUT = 1024 * 1024;

// Close codes (4000-4999 are for applications): the HTTP status the same failure would have had.
const closeCode = (status: number) => (status >= 400 && status < 600 ? 4000 + status : 1011);

type Msg = Record<string, unknown> & { type?: unknown };

/** One WebSocket connection: JSON in and out, reads in order, an AbortSignal that fires on close. */
class WsSession {
  private readonly queue: Msg[] = [];
  private waiter: ((m: Msg | null) => void) | null = null;
  private handler: ((m: Msg) => void) | null = null;
  private readonly abort = new AbortController();
  lastMessageAt = Date.now();

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      this.lastMessageAt = Date.now();
      let m: Msg;
      try {
        const v: unknown = JSON.parse(isBinary ? Buffer.from(data as Buffer).toString() : String(data));
        if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
        m = v as Msg;
      } catch {
        this.send({ type: 'error', data: 'messages must be JSON objects with a "type"', fatal: false });
        return;
      }
      if (this.handler) this.handler(m);
      else if (this.waiter) {
        const w = this.waiter;
        this.waiter = null;
        w(m);
      } else this.queue.push(m);
    });
    ws.on('close', () => {
      this.abort.abort();
      this.waiter?.(null);
      this.waiter = null;
    });
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  get open(): boolean {
    return this.ws.readyState === this.ws.OPEN;
  }

  /** The next message, or null when the client closed or took longer than `ms`. */
  next(ms: number): Promise<Msg | null> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.signal.aborted) return Promise.resolve(null);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        resolve(null);
      }, ms);
      this.waiter = (m) => {
        clearTimeout(timer);
        resolve(m);
      };
    });
  }

  /** From now on every message goes to `fn` (queued ones first). */
  listen(fn: (m: Msg) => void): void {
    this.handler = fn;
    for (const m of this.queue.splice(0)) fn(m);
  }

  send(obj: object): void {
    if (this.open) this.ws.send(JSON.stringify(obj));
  }

  /** Sends an error message and closes with a code derived from the HTTP status. */
  fail(message: string, status = 400): void {
    this.send({ type: 'error', data: message, fatal: true });
    this.close(closeCode(status), message);
  }

  close(code = 1000, reason = ''): void {
    if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING) {
      // Close reasons are limited to 123 bytes.
      this.ws.close(code, Buffer.from(reason).subarray(0, 120).toString());
    }
    this.abort.abort();
  }
}

function errorOf(err: unknown, hostId?: string): ApiError {
  if (err instanceof ApiError) return err;
  return agentError(err, hostId ?? '00000000-0000-0000-0000-000000000000');
}

function stringRecord(v: unknown, field: string): Record<string, string> {
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new ApiError(400, 'invalid_request', `${field} must be an object`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') throw new ApiError(400, 'invalid_request', `${field}.${k} must be a string`);
    out[k] = val;
  }
  if (Object.keys(out).length > LIMITS.maxEnvs)
    throw new ApiError(400, 'invalid_request', `${field} has too many entries`);
  return out;
}

function optString(v: unknown, field: string): string {
  if (v === undefined) return '';
  if (typeof v !== 'string') throw new ApiError(400, 'invalid_request', `${field} must be a string`);
  return v;
}

function stringArray(v: unknown, field: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string') || v.length > LIMITS.maxArgs) {
    throw new ApiError(400, 'invalid_request', `${field} must be an array of strings`);
  }
  return v as string[];
}

function intIn(v: unknown, field: string, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ApiError(400, 'invalid_request', `${field} must be an integer between ${min} and ${max}`);
  }
  return v;
}

/**
 * Runs `pump` (a host agent stream relayed to the socket), then closes with 1000; the client
 * closing ends it quietly, any other failure closes with the error's status.
 */
async function relay(sess: WsSession, hostId: string, pump: () => Promise<void>): Promise<void> {
  try {
    await pump();
    sess.close(1000, 'done');
  } catch (err) {
    if (sess.signal.aborted) return;
    const e = errorOf(err, hostId);
    sess.fail(e.message, e.status);
  }
}

/** Exec-style events (exec/stream and processes/…/stream) as JSON messages; true when the process exited. */
function execEventSender(sess: WsSession): (ev: ExecStreamResponse) => boolean {
  const out = new TextDecoder();
  const err = new TextDecoder();
  return (ev) => {
    const e = ev.event;
    if (e.case === 'start') sess.send({ type: 'start', pid: e.value.pid });
    else if (e.case === 'data') {
      const o = e.value.output;
      if (o.case === 'stdout') sess.send({ type: 'stdout', data: out.decode(o.value, { stream: true }) });
      else if (o.case === 'stderr') sess.send({ type: 'stderr', data: err.decode(o.value, { stream: true }) });
    } else if (e.case === 'end') {
      if (e.value.error) sess.send({ type: 'error', data: e.value.error, fatal: false });
      sess.send({ type: 'exit', exit_code: e.value.exitCode });
      return true;
    }
    return false;
  };
}

export function capsuleWsRoutes(app: App, ctx: RouteContext, svc: CapsuleService): void {
  const { guards } = ctx;
  const tags = ['capsules'];
  const security = CAPSULE_SECURITY;

  /** Header auth when headers are present (HTTP 401/404/409 before the upgrade); else deferred to the first message. */
  async function preHandler(request: FastifyRequest): Promise<void> {
    const h = request.headers;
    if (h['x-api-key'] === undefined && h.authorization === undefined) return;
    await guards.requireApiKeyOrUser(request);
    const params = request.params as { id: string };
    await svc.running(request.team!.id, params.id);
  }

  /** Authenticates a first-message token: an API key (wrn_…) or a session JWT. */
  async function tokenTeam(token: string): Promise<TeamContext> {
    const fake = {
      headers: token.startsWith('wrn_') ? { 'x-api-key': token } : { authorization: `Bearer ${token}` },
      auth: null,
      team: null,
    } as unknown as FastifyRequest;
    await guards.requireApiKeyOrUser(fake);
    return fake.team!;
  }

  /** Authentication (header or first message) and the running capsule; null after reporting a failure. */
  async function open(sess: WsSession, request: FastifyRequest): Promise<LiveCapsule | null> {
    let team = request.team;
    try {
      if (!team) {
        const m = await sess.next(WS_AUTH_TIMEOUT_MS);
        if (!m || m.type !== 'auth' || typeof m.token !== 'string' || m.token === '') {
          throw unauthorized(`send {"type":"auth","token":"<JWT or API key>"} within ${WS_AUTH_TIMEOUT_MS / 1000} s`);
        }
        team = await tokenTeam(m.token);
      }
      return await svc.running(team.id, (request.params as { id: string }).id);
    } catch (err) {
      const e = errorOf(err);
      sess.fail(e.message, e.status);
      return null;
    }
  }

  const upgradeOnly = async (_request: FastifyRequest, reply: { code(n: number): { send(b: unknown): unknown } }) =>
    reply.code(426).send({ error: { code: 'upgrade_required', message: 'this route speaks WebSocket only' } });

  void app.register(async (sub) => {
    await sub.register(websocket, { options: { maxPayload: 8 * 1024 * 1024 } });

    sub.route({
      method: 'GET',
      url: '/v1/capsules/:id/exec/stream',
      preHandler,
      schema: {
        summary: 'Run a command and stream its output (WebSocket)',
        description:
          'Client: `{"type":"start","cmd","args","envs","cwd","user","timeout_sec"}` (after `{"type":"auth","token"}` ' +
          'when no header authenticates), later `{"type":"stop"}` to kill it. Server: `{"type":"start","pid"}`, ' +
          '`{"type":"stdout"|"stderr","data"}` (UTF-8 text), `{"type":"exit","exit_code"}`, `{"type":"error","data"}`; ' +
          'closes when the process ends.',
        tags,
        security,
        params: IdParams,
        response: errorResponses(400, 401, 403, 404, 409, 426),
      },
      handler: upgradeOnly,
      wsHandler: async (socket, request) => {
        const sess = new WsSession(socket);
        const live = await open(sess, request);
        if (!live) return;
        try {
          const m = await sess.next(WS_START_TIMEOUT_MS);
          if (!m) throw new ApiError(400, 'invalid_request', 'expected {"type":"start","cmd":…}');
          if (m.type !== 'start' || typeof m.cmd !== 'string' || m.cmd === '') {
            throw new ApiError(400, 'invalid_request', 'the first message must be {"type":"start","cmd":"…"}');
          }
          const req = {
            sandboxId: live.wireId,
            cmd: m.cmd,
            args: stringArray(m.args, 'args'),
            envs: stringRecord(m.envs, 'envs'),
            cwd: optString(m.cwd, 'cwd'),
            user: optString(m.user, 'user'),
            timeoutSec: intIn(m.timeout_sec, 'timeout_sec', 0, LIMITS.maxExecTimeoutSec, 0),
          };
          const stop = new AbortController();
          sess.signal.addEventListener('abort', () => stop.abort());
          sess.listen((msg) => {
            // Ending the stream makes the agent kill the process.
            if (msg.type === 'stop') stop.abort();
          });
          const send = execEventSender(sess);
          let exited = false;
          try {
            for await (const ev of live.client.execStream(req, { signal: stop.signal })) exited = send(ev) || exited;
          } catch (err) {
            if (!stop.signal.aborted) throw err;
          }
          if (!exited && stop.signal.aborted && sess.open) sess.send({ type: 'exit', exit_code: -1, stopped: true });
          sess.close(1000, 'done');
        } catch (err) {
          const e = errorOf(err, live.host.id);
          sess.fail(e.message, e.status);
        } finally {
          await svc.touch(live.row.id);
        }
      },
    });

    sub.route({
      method: 'GET',
      url: '/v1/capsules/:id/processes/:selector/stream',
      preHandler,
      schema: {
        summary: "Follow a running process's output (WebSocket)",
        description:
          'Selector: a pid or a tag. Server messages as for exec/stream, from now on (no replay); closing the ' +
          'socket leaves the process running.',
        tags,
        security,
        params: Type.Object({ id: Type.String(), selector: Type.String({ description: 'A pid (digits) or a tag' }) }),
        response: errorResponses(400, 401, 403, 404, 409, 426),
      },
      handler: upgradeOnly,
      wsHandler: async (socket, request) => {
        const sess = new WsSession(socket);
        let selector;
        try {
          selector = parseSelector((request.params as { selector: string }).selector);
        } catch (err) {
          const e = errorOf(err);
          return sess.fail(e.message, e.status);
        }
        const live = await open(sess, request);
        if (!live) return;
        sess.listen(() => {}); // nothing to say to a follower
        const send = execEventSender(sess);
        await relay(sess, live.host.id, async () => {
          for await (const ev of live.client.connectProcess(
            { sandboxId: live.wireId, selector },
            { signal: sess.signal },
          )) {
            send(ev);
          }
        });
        await svc.touch(live.row.id);
      },
    });

    sub.route({
      method: 'GET',
      url: '/v1/capsules/:id/files/watch',
      preHandler,
      schema: {
        summary: 'Watch a directory for changes (WebSocket)',
        description:
          'Query: `path` (a directory), `recursive=true` for its subdirectories too, `user` to watch as (the ' +
          'directory must be readable by them). Server: `{"type":"started"}` once the watch is in place, then ' +
          '`{"type":"event","name","op"}` per change (`name` relative to `path`; `op` one of create, write, remove, ' +
          'rename, chmod), `{"type":"ping"}` every 30 s, `{"type":"error","data"}` before a close when the watch ' +
          'fails (e.g. the directory was removed). Close the socket to stop watching. Watching is not activity: ' +
          'an idle capsule is still paused after its `timeout_sec`.',
        tags,
        security,
        params: IdParams,
        querystring: Type.Object(
          {
            path: Type.String({ minLength: 1, maxLength: LIMITS.maxPath }),
            recursive: Type.Optional(StringEnum(['true', 'false'])),
            user: Type.Optional(Type.String({ pattern: '^[a-z_][a-z0-9_-]{0,31}$' })),
          },
          { additionalProperties: false },
        ),
        response: errorResponses(400, 401, 403, 404, 409, 426),
      },
      handler: upgradeOnly,
      wsHandler: async (socket, request) => {
        const sess = new WsSession(socket);
        const q = request.query as { path: string; recursive?: string; user?: string };
        const live = await open(sess, request);
        if (!live) return;
        sess.listen(() => {}); // the client only closes
        const ping = setInterval(() => sess.send({ type: 'ping' }), ctx.pty.pingIntervalMs);
        const req = { sandboxId: live.wireId, path: q.path, recursive: q.recursive === 'true', user: q.user ?? '' };
        await relay(sess, live.host.id, async () => {
          for await (const ev of live.client.watchDir(req, { signal: sess.signal })) {
            const e = ev.event;
            if (e.case === 'started') sess.send({ type: 'started' });
            else if (e.case === 'change') sess.send({ type: 'event', name: e.value.name, op: e.value.op });
          }
        });
        clearInterval(ping);
      },
    });

    sub.route({
      method: 'GET',
      url: '/v1/capsules/:id/pty',
      preHandler,
      schema: {
        summary: 'Interactive terminal (WebSocket)',
        description:
          'First client message: `{"type":"start","cmd"="/bin/bash","args","cols"=80,"rows"=24,"envs","cwd","user"}` ' +
          'or `{"type":"connect","tag"}` to re-attach. Then `{"type":"input","data":"<base64>"}`, ' +
          '`{"type":"resize","cols","rows"}`, `{"type":"kill"}`. Server: `{"type":"started","tag","pid"}`, ' +
          '`{"type":"output","data":"<base64>"}`, `{"type":"exit","exit_code"}`, `{"type":"error","data","fatal"}`, ' +
          '`{"type":"ping"}` every 30 s (`WRENN_PTY_PING_INTERVAL_SEC`). The terminal survives a disconnect ' +
          '(re-attach by tag, output from then on); a connection whose client sent nothing (a `ping` counts) for ' +
          '120 s (`WRENN_PTY_IDLE_TIMEOUT_SEC`) is closed with code 1000, and the terminal keeps running.',
        tags,
        security,
        params: IdParams,
        response: errorResponses(400, 401, 403, 404, 409, 426),
      },
      handler: upgradeOnly,
      wsHandler: async (socket, request) => {
        const sess = new WsSession(socket);
        const live = await open(sess, request);
        if (!live) return;
        const timers: NodeJS.Timeout[] = [];
        try {
          const m = await sess.next(WS_START_TIMEOUT_MS);
          if (!m) throw new ApiError(400, 'invalid_request', 'expected {"type":"start"} or {"type":"connect","tag"}');
          let tag: string;
          let attach;
          if (m.type === 'start') {
            tag = `pty-${randomBytes(4).toString('hex')}`;
            attach = {
              sandboxId: live.wireId,
              tag,
              cmd: optString(m.cmd, 'cmd') || '/bin/bash',
              args: stringArray(m.args, 'args'),
              cols: intIn(m.cols, 'cols', 1, 1000, 80),
              rows: intIn(m.rows, 'rows', 1, 1000, 24),
              envs: { TERM: 'xterm-256color', ...stringRecord(m.envs, 'envs') },
              cwd: optString(m.cwd, 'cwd'),
              user: optString(m.user, 'user'),
            };
          } else if (m.type === 'connect') {
            if (typeof m.tag !== 'string' || !isSafeName(m.tag)) {
              throw new ApiError(400, 'invalid_request', 'connect needs the "tag" of a terminal, e.g. "pty-1a2b3c4d"');
            }
            tag = m.tag;
            attach = { sandboxId: live.wireId, tag, cmd: '' };
          } else {
            throw new ApiError(
              400,
              'invalid_request',
              'the first message must be {"type":"start"} or {"type":"connect","tag"}',
            );
          }

          // Input is sent one call at a time; what arrives meanwhile is coalesced into the next call.
          let pending: Buffer[] = [];
          let pendingBytes = 0;
          let sending = false;
          const pump = async () => {
            if (sending) return;
            sending = true;
            while (pending.length > 0 && !sess.signal.aborted) {
              const data = Buffer.concat(pending);
              pending = [];
              pendingBytes = 0;
              try {
                await live.client.ptySendInput({ sandboxId: live.wireId, tag, data }, { timeoutMs: 5_000 });
              } catch (err) {
                sess.send({ type: 'error', data: errorOf(err, live.host.id).message, fatal: false });
              }
            }
            sending = false;
          };
          const call = (fn: () => Promise<unknown>) =>
            void fn().catch((err: unknown) =>
              sess.send({ type: 'error', data: errorOf(err, live.host.id).message, fatal: false }),
            );
          sess.listen((msg) => {
            try {
              switch (msg.type) {
                case 'input': {
                  if (typeof msg.data !== 'string')
                    throw new ApiError(400, 'invalid_request', 'input data must be base64');
                  const data = Buffer.from(msg.data, 'base64');
                  if (pendingBytes + data.length > PTY_MAX_PENDING_INPUT) {
                    throw new ApiError(
                      429,
                      'input_dropped',
                      'input dropped: the terminal is not reading it fast enough',
                    );
                  }
                  pending.push(data);
                  pendingBytes += data.length;
                  void pump();
                  break;
                }
                case 'resize': {
                  const cols = intIn(msg.cols, 'cols', 1, 1000, 0);
                  const rows = intIn(msg.rows, 'rows', 1, 1000, 0);
                  call(() => live.client.ptyResize({ sandboxId: live.wireId, tag, cols, rows }, { timeoutMs: 5_000 }));
                  break;
                }
                case 'kill':
                  call(() => live.client.ptyKill({ sandboxId: live.wireId, tag }, { timeoutMs: 5_000 }));
                  break;
                case 'ping':
                case 'pong':
                  break;
                default:
                  throw new ApiError(400, 'invalid_request', `unknown message type "${String(msg.type)}"`);
              }
            } catch (err) {
              sess.send({ type: 'error', data: errorOf(err).message, fatal: false });
            }
          });
          const { pingIntervalMs, idleTimeoutMs } = ctx.pty;
          timers.push(setInterval(() => sess.send({ type: 'ping' }), pingIntervalMs));
          // Checked often enough that a silent client is dropped within a second of its timeout.
          timers.push(
            setInterval(
              () => {
                if (Date.now() - sess.lastMessageAt > idleTimeoutMs)
                  sess.close(1000, `idle for ${Math.round(idleTimeoutMs / 1000)} s`);
              },
              Math.min(1000, idleTimeoutMs),
            ),
          );

          let exited = false;
          try {
            for await (const ev of live.client.ptyAttach(attach, { signal: sess.signal })) {
              const e = ev.event;
              if (e.case === 'started') sess.send({ type: 'started', tag, pid: e.value.pid });
              else if (e.case === 'output')
                sess.send({ type: 'output', data: Buffer.from(e.value.data).toString('base64') });
              else if (e.case === 'exited') {
                if (e.value.error) sess.send({ type: 'error', data: e.value.error, fatal: false });
                sess.send({ type: 'exit', exit_code: e.value.exitCode });
                exited = true;
              }
            }
          } catch (err) {
            if (!sess.signal.aborted) throw err;
          }
          sess.close(1000, exited ? 'exited' : 'done');
        } catch (err) {
          const e = errorOf(err, live.host.id);
          sess.fail(e.message, e.status);
        } finally {
          for (const t of timers) clearInterval(t);
          await svc.touch(live.row.id);
        }
      },
    });
  });
}
