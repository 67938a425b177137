// The capsule port proxy: a request whose Host is `{port}-{capsule id}.{domain}`
// (any domain) never reaches the API routes. It must authenticate like the API
// (X-API-Key, or a Bearer session JWT) as a team that owns the capsule (else
// 404), the capsule must be running (409), and it is then forwarded to the
// owning host agent's `/proxy/{capsule id}/{port}{path}`, which forwards it to
// that port inside the capsule. HTTP bodies and WebSocket (any Upgrade)
// traffic are piped both ways without buffering.
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { HOP_BY_HOP_HEADERS, formatId, tryParseId } from '@wrenn/contracts';
import type { App, RouteContext } from '../server.js';
import { ApiError, notFound } from '../errors.js';
import { hostUnreachable } from '../capsules/agent-errors.js';

/** `8080-cl-….example.com` (the port of the Host header itself already stripped). */
const PROXY_HOST_RE = /^(\d{1,5})-(cl-[0-9a-z]+)\./;

interface Target {
  wireId: string;
  port: number;
  hostId: string;
  agentHost: string;
  agentPort: number;
  agentToken: string;
  /** The client's own Authorization header when it is not our credential (goes to the app in the capsule). */
  userAuthorization?: string;
}

/** `{port, wireId}` when the Host header addresses a capsule port, else null. */
export function proxyHostTarget(hostHeader: string | undefined): { port: number; wireId: string } | null {
  if (!hostHeader) return null;
  const host = hostHeader.toLowerCase().replace(/:\d+$/, '');
  const m = PROXY_HOST_RE.exec(host);
  return m ? { port: Number(m[1]), wireId: m[2]! } : null;
}

export class PortProxy {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  private readonly upgraded = new Set<Duplex>();

  constructor(
    private readonly ctx: RouteContext,
    private readonly log: Logger,
  ) {}

  private async resolve(req: http.IncomingMessage): Promise<Target> {
    const addr = proxyHostTarget(req.headers.host)!;
    if (addr.port < 1 || addr.port > 65535)
      throw new ApiError(400, 'invalid_request', 'port must be between 1 and 65535');
    // The guards read only headers: the same checks as every API route.
    const fake = { headers: req.headers, auth: null, team: null } as unknown as FastifyRequest;
    await this.ctx.guards.requireApiKeyOrUser(fake);
    const team = fake.team!;
    const id = tryParseId('capsule', addr.wireId);
    const row = id
      ? await this.ctx.db
          .selectFrom('sandboxes as s')
          .leftJoin('hosts as h', 'h.id', 's.host_id')
          .select(['s.id', 's.status', 'h.id as host_id', 'h.address', 'h.agent_token', 'h.status as host_status'])
          .where('s.id', '=', id)
          .where('s.team_id', '=', team.id)
          .executeTakeFirst()
      : undefined;
    if (!row) throw notFound(`capsule ${addr.wireId} not found`, 'capsule_not_found');
    if (row.status !== 'running') {
      throw new ApiError(409, 'invalid_state', `capsule ${addr.wireId} is ${row.status}, not running`);
    }
    if (!row.host_id || !row.address)
      throw new ApiError(503, 'host_unavailable', `the host of capsule ${addr.wireId} is gone`);
    if (row.host_status !== 'online') throw hostUnreachable(row.host_id);
    const agentUrl = new URL(`http://${row.address}`);
    const usedApiKey = req.headers['x-api-key'] !== undefined;
    const auth = req.headers.authorization;
    return {
      wireId: formatId('capsule', row.id),
      port: addr.port,
      hostId: row.host_id,
      agentHost: agentUrl.hostname.replace(/^\[|\]$/g, ''),
      agentPort: Number(agentUrl.port || 80),
      agentToken: row.agent_token ?? '',
      userAuthorization: usedApiKey && typeof auth === 'string' ? auth : undefined,
    };
  }

  private headersFor(req: http.IncomingMessage, t: Target, upgrade: boolean): http.OutgoingHttpHeaders {
    const out: http.OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (v === undefined || HOP_BY_HOP_HEADERS.has(k)) continue;
      // Our credentials never reach the capsule; the client may not set the hop's own headers.
      if (k === 'x-api-key' || k === 'authorization' || k === 'host') continue;
      if (k === 'x-wrenn-authorization' || k === 'x-forwarded-host') continue;
      out[k] = v;
    }
    if (t.userAuthorization) out['x-wrenn-authorization'] = t.userAuthorization;
    out.authorization = `Bearer ${t.agentToken}`;
    out['x-forwarded-host'] = req.headers.host;
    const prior = req.headers['x-forwarded-for'];
    const remote = req.socket.remoteAddress ?? '';
    out['x-forwarded-for'] = typeof prior === 'string' && prior ? `${prior}, ${remote}` : remote;
    if (upgrade) {
      out.connection = 'Upgrade';
      if (req.headers.upgrade) out.upgrade = req.headers.upgrade;
    }
    return out;
  }

  private agentPath(t: Target, req: http.IncomingMessage): string {
    const url = req.url ?? '/';
    return `/proxy/${t.wireId}/${t.port}${url.startsWith('/') ? url : '/' + url}`;
  }

  async handleRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let t: Target;
    try {
      t = await this.resolve(req);
    } catch (err) {
      req.resume();
      return sendError(res, this.asApiError(err));
    }
    const up = http.request({
      host: t.agentHost,
      port: t.agentPort,
      method: req.method,
      path: this.agentPath(t, req),
      headers: this.headersFor(req, t, false),
      agent: this.agent,
    });
    up.on('response', (r) => {
      const headers: http.OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(r.headers)) if (v !== undefined && !HOP_BY_HOP_HEADERS.has(k)) headers[k] = v;
      res.writeHead(r.statusCode ?? 502, r.statusMessage, headers);
      r.pipe(res);
      r.on('error', () => res.destroy());
    });
    up.on('error', (err) => {
      this.log.debug({ err, capsule: t.wireId }, 'port proxy: host agent request failed');
      if (!res.headersSent) sendError(res, hostUnreachable(t.hostId));
      else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  }

  async handleUpgrade(req: http.IncomingMessage, client: Duplex, head: Buffer): Promise<void> {
    client.on('error', () => client.destroy());
    let t: Target;
    try {
      t = await this.resolve(req);
    } catch (err) {
      return writeRawError(client, this.asApiError(err));
    }
    const upstream = net.connect({ host: t.agentHost, port: t.agentPort, noDelay: true });
    this.upgraded.add(client);
    client.on('close', () => {
      this.upgraded.delete(client);
      upstream.destroy();
    });
    upstream.on('close', () => client.destroy());
    upstream.on('error', (err) => {
      this.log.debug({ err, capsule: t.wireId }, 'port proxy: host agent connection failed');
      if (upstream.bytesRead === 0) writeRawError(client, hostUnreachable(t.hostId));
      else client.destroy();
    });
    upstream.once('connect', () => {
      let raw = `${req.method} ${this.agentPath(t, req)} HTTP/1.1\r\nhost: ${t.agentHost}:${t.agentPort}\r\n`;
      for (const [k, v] of Object.entries(this.headersFor(req, t, true))) {
        for (const one of Array.isArray(v) ? v : [v]) if (one !== undefined) raw += `${k}: ${String(one)}\r\n`;
      }
      upstream.write(raw + '\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
  }

  /** Ends proxied WebSocket connections (shutdown); they are not the HTTP server's to close. */
  close(): void {
    for (const s of this.upgraded) s.destroy();
    this.agent.destroy();
  }

  private asApiError(err: unknown): ApiError {
    if (err instanceof ApiError) return err;
    this.log.error({ err }, 'port proxy: internal error');
    return new ApiError(500, 'internal_error', 'internal server error');
  }
}

function sendError(res: http.ServerResponse, e: ApiError): void {
  if (res.headersSent) return void res.destroy();
  const body = JSON.stringify({ error: { code: e.code, message: e.message } });
  res.writeHead(e.status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}

function writeRawError(socket: Duplex, e: ApiError): void {
  const body = JSON.stringify({ error: { code: e.code, message: e.message } });
  socket.end(
    `HTTP/1.1 ${e.status} ${http.STATUS_CODES[e.status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

type Listener = (...args: unknown[]) => void;

/**
 * Puts the proxy in front of Fastify on the HTTP server: requests and upgrades
 * for capsule hosts go to the proxy, everything else to the listeners that
 * were there (Fastify's router, @fastify/websocket's upgrade handler).
 */
export function installPortProxy(app: App, ctx: RouteContext): void {
  const proxy = new PortProxy(ctx, app.log as unknown as Logger);
  app.addHook('onReady', async () => {
    const server = app.server;
    for (const event of ['request', 'upgrade'] as const) {
      const previous = server.listeners(event) as Listener[];
      server.removeAllListeners(event);
      server.on(event, (req: http.IncomingMessage, second: unknown, head: unknown) => {
        if (proxyHostTarget(req.headers.host) === null) {
          if (previous.length === 0) (second as Duplex).destroy(); // what Node does with an unhandled upgrade
          for (const l of previous) l.call(server, req, second, head);
        } else if (event === 'request') {
          void proxy.handleRequest(req, second as http.ServerResponse);
        } else {
          void proxy.handleUpgrade(req, second as Duplex, head as Buffer);
        }
      });
    }
  });
  app.addHook('preClose', async () => proxy.close());
}
