// The capsule port proxy on the host agent: `/proxy/{capsule id}/{port}/{path}`
// on the agent's HTTP/1.1 listener, with the same bearer token as the RPCs,
// is forwarded to `{path}` on that port at the capsule's address. HTTP bodies
// and WebSocket (any Upgrade) traffic are piped both ways, never buffered.
//
// The control plane authenticates the user and checks ownership; it sends the
// public Host in X-Forwarded-Host (used as Host here, as apps expect it) and a
// user's own Authorization header in X-Wrenn-Authorization, since
// Authorization carries the agent token on this hop.
import http from 'node:http';
import net from 'node:net';
import { createHash, timingSafeEqual } from 'node:crypto';
import { Code, ConnectError } from './errors.js';
import type { Logger, SandboxManager } from './manager.js';
import { HOP_BY_HOP_HEADERS } from '@wrenn/contracts';

export const PROXY_PATH_PREFIX = '/proxy/';

const PROXY_PATH_RE = /^\/proxy\/(cl-[0-9a-z]{25})\/(\d{1,5})(\/[^]*|\?[^]*)?$/;
/** Connection attempts to the capsule's port (a server may still be starting). */
const DIAL_BACKOFF_MS = [100, 200];
const DIAL_TIMEOUT_MS = 5_000;

export interface ProxyOptions {
  manager: SandboxManager;
  /** Same token as the RPCs; null disables the check (tests without a control plane). */
  token: string | null;
  log: Logger;
}

interface Target {
  id: string;
  port: number;
  path: string;
  hostIp: string;
}

class ProxyError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class CapsuleProxy {
  private readonly want: Buffer | null;

  constructor(private readonly opts: ProxyOptions) {
    this.want = opts.token === null ? null : digest(`Bearer ${opts.token}`);
  }

  /** True for requests this proxy answers (everything else is Connect RPC). */
  static matches(req: http.IncomingMessage): boolean {
    return (req.url ?? '').startsWith(PROXY_PATH_PREFIX);
  }

  handleRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    let target: Target;
    try {
      target = this.resolve(req);
    } catch (err) {
      req.resume();
      return sendError(res, asProxyError(err));
    }
    void dial(target.hostIp, target.port).then(
      (socket) => {
        const upstream = http.request(
          {
            createConnection: () => socket,
            method: req.method,
            path: target.path,
            headers: forwardHeaders(req, false),
          },
          (up) => {
            const headers = responseHeaders(up, target);
            res.writeHead(up.statusCode ?? 502, up.statusMessage, headers);
            up.pipe(res);
            up.on('error', () => res.destroy());
          },
        );
        upstream.on('error', (err) => {
          this.opts.log.debug({ err, id: target.id, port: target.port }, 'proxy: upstream request failed');
          if (!res.headersSent) sendError(res, unreachablePort(target));
          else res.destroy();
        });
        // The client went away: stop talking to the capsule too.
        res.on('close', () => {
          if (!res.writableFinished) upstream.destroy();
        });
        req.pipe(upstream);
      },
      () => {
        req.resume();
        sendError(res, unreachablePort(target));
      },
    );
  }

  handleUpgrade(req: http.IncomingMessage, client: net.Socket, head: Buffer): void {
    client.on('error', () => client.destroy());
    let target: Target;
    try {
      target = this.resolve(req);
    } catch (err) {
      return writeRawError(client, asProxyError(err));
    }
    void dial(target.hostIp, target.port).then(
      (upstream) => {
        upstream.setTimeout(0);
        upstream.on('error', () => client.destroy());
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
        const headers = forwardHeaders(req, true);
        let raw = `${req.method} ${target.path} HTTP/1.1\r\n`;
        for (const [k, v] of Object.entries(headers)) {
          for (const one of Array.isArray(v) ? v : [v]) raw += `${k}: ${one}\r\n`;
        }
        upstream.write(raw + '\r\n');
        if (head.length) upstream.write(head);
        upstream.pipe(client);
        client.pipe(upstream);
      },
      () => writeRawError(client, unreachablePort(target)),
    );
  }

  /** Checks the token, parses the path and finds the running capsule. */
  private resolve(req: http.IncomingMessage): Target {
    if (this.want !== null) {
      const got = digest(req.headers.authorization ?? '');
      if (!timingSafeEqual(got, this.want)) throw new ProxyError(401, 'unauthorized', 'missing or invalid agent token');
    }
    const m = PROXY_PATH_RE.exec(req.url ?? '');
    if (!m) throw new ProxyError(400, 'invalid_request', 'proxy paths look like /proxy/{capsule id}/{port}/{path}');
    const port = Number(m[2]);
    if (port < 1 || port > 65535) throw new ProxyError(400, 'invalid_request', 'port must be between 1 and 65535');
    const rest = m[3] ?? '/';
    const path = rest.startsWith('?') ? '/' + rest : rest;
    const id = m[1]!;
    try {
      // ping: the capsule must be running, and traffic counts as activity for its idle timeout.
      this.opts.manager.ping(id);
      return { id, port, path, hostIp: this.opts.manager.info(id).hostIp };
    } catch (err) {
      if (err instanceof ConnectError) {
        const missing = err.code === Code.NotFound;
        throw new ProxyError(missing ? 404 : 409, missing ? 'not_found' : 'invalid_state', err.rawMessage);
      }
      throw err;
    }
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function asProxyError(err: unknown): ProxyError {
  return err instanceof ProxyError ? err : new ProxyError(500, 'internal_error', 'internal error');
}

function unreachablePort(t: Target): ProxyError {
  return new ProxyError(502, 'bad_gateway', `nothing is accepting connections on port ${t.port} in capsule ${t.id}`);
}

/** Connects to the capsule's port, retrying briefly while nothing listens yet. */
async function dial(host: string, port: number): Promise<net.Socket> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ host, port, noDelay: true });
        s.setTimeout(DIAL_TIMEOUT_MS, () => s.destroy(new Error('connect timeout')));
        s.once('connect', () => {
          s.setTimeout(0);
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      });
    } catch (err) {
      const wait = DIAL_BACKOFF_MS[attempt];
      if (wait === undefined) throw err;
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

function forwardHeaders(req: http.IncomingMessage, upgrade: boolean): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || HOP_BY_HOP_HEADERS.has(k) || k === 'authorization' || k === 'host') continue;
    if (k === 'x-wrenn-authorization' || k === 'x-forwarded-host') continue;
    out[k] = v;
  }
  const userAuth = req.headers['x-wrenn-authorization'];
  if (typeof userAuth === 'string') out.authorization = userAuth;
  const host = req.headers['x-forwarded-host'];
  if (typeof host === 'string') out.host = host;
  if (upgrade) {
    out.connection = 'Upgrade';
    if (req.headers.upgrade) out.upgrade = req.headers.upgrade;
  }
  return out;
}

function responseHeaders(up: http.IncomingMessage, t: Target): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(up.headers)) {
    if (v === undefined || HOP_BY_HOP_HEADERS.has(k)) continue;
    out[k] = v;
  }
  // An absolute redirect to the capsule's internal address means "this server": keep only the path.
  const loc = up.headers.location;
  const internal = `http://${t.hostIp}:${t.port}`;
  if (typeof loc === 'string' && loc.startsWith(internal)) out.location = loc.slice(internal.length) || '/';
  return out;
}

function sendError(res: http.ServerResponse, e: ProxyError): void {
  if (res.headersSent) return void res.destroy();
  const body = JSON.stringify({ error: { code: e.code, message: e.message } });
  res.writeHead(e.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function writeRawError(socket: net.Socket, e: ProxyError): void {
  const body = JSON.stringify({ error: { code: e.code, message: e.message } });
  socket.end(
    `HTTP/1.1 ${e.status} ${http.STATUS_CODES[e.status] ?? 'Error'}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}
