// One TCP port for everything: Connect RPCs (process.Process,
// filesystem.Filesystem) and the plain HTTP routes, over HTTP/1.1 and h2c.
//
// Node cannot serve both HTTP versions on one cleartext server, so each new
// connection is routed by its first bytes: the HTTP/2 connection preface
// ("PRI * HTTP/2.0...") goes to the http2 server, anything else to the
// HTTP/1.1 server. Client-streaming RPCs (StreamInput) need h2c; everything
// else works on both.
import http from 'node:http';
import type * as Http2Module from 'node:http2';
import net from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { HttpRoutes, sendError, sendJson, type Req, type Res } from './http/routes.js';
import type { Rpc } from './rpc.js';
import { EnvdState, type EnvdOptions } from './state.js';
import { lazy, nodeRequire } from './lazy.js';

const H2_PREFACE = Buffer.from('PRI ');
/** A connection that has not said anything within this time is closed. */
const FIRST_BYTES_TIMEOUT_MS = 30_000;

export interface EnvdServer {
  port: number;
  state: EnvdState;
  close(): Promise<void>;
}

function tokenMatches(given: string | string[] | undefined, expected: string): boolean {
  if (typeof given !== 'string') return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

function isRpcPath(pathname: string): boolean {
  return pathname.startsWith('/process.Process/') || pathname.startsWith('/filesystem.Filesystem/');
}

export interface StartOptions extends EnvdOptions {
  host: string;
  port: number;
  /** Default environment of every process before any /init (e.g. WRENN_SANDBOX_ID from the host agent). */
  envVars?: Record<string, string>;
}

export async function startEnvd(opts: StartOptions): Promise<EnvdServer> {
  const state = new EnvdState({ keepaliveMs: opts.keepaliveMs });
  for (const [k, v] of Object.entries(opts.envVars ?? {})) state.envVars.set(k, v);
  const routes = new HttpRoutes(state);
  // Loaded on the first RPC (see rpc.ts); esbuild keeps it in the one bundle, evaluated lazily.
  let rpc: Rpc | undefined;
  let rpcLoading: Promise<Rpc> | undefined;
  const loadRpc = () => (rpcLoading ??= import('./rpc.js').then((m) => (rpc = m.createRpc(state))));

  const handler = (req: Req, res: Res) => {
    // Browsers may call envd directly (as with E2B's SDK): allow any origin;
    // the access token, not the origin, is what protects envd.
    res.setHeader('access-control-allow-origin', '*');
    res.setHeader('access-control-expose-headers', '*');
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        'access-control-allow-methods': 'GET, POST, PUT, DELETE, OPTIONS',
        'access-control-allow-headers': String(req.headers['access-control-request-headers'] ?? '*'),
        'access-control-max-age': '86400',
      });
      res.end();
      return;
    }
    const pathname = (req.url ?? '/').split('?', 1)[0] ?? '/';
    const token = state.accessToken;
    if (token !== undefined && pathname !== '/health' && !tokenMatches(req.headers['x-access-token'], token)) {
      req.resume();
      const message = 'missing or invalid X-Access-Token header';
      if (isRpcPath(pathname)) sendJson(res, 401, { code: 'unauthenticated', message });
      else sendError(res, 401, message);
      return;
    }
    if (HttpRoutes.serves(pathname)) {
      void routes.handle(req, res);
    } else if (rpc) {
      rpc.handle(req, res);
    } else {
      req.pause();
      loadRpc().then(
        (r) => r.handle(req, res),
        (err: Error) => sendError(res, 500, `cannot load the RPC services: ${err.message}`),
      );
    }
  };

  const h1 = http.createServer(
    // Uploads may take long: no overall request deadline; headers must come quickly.
    { requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 65_000 },
    (req, res) => handler(req, res),
  );
  // http2 (with tls under it) takes ~10 ms to load: only when an h2c client shows up.
  const h2 = lazy(() => {
    const server = (nodeRequire('node:http2') as typeof Http2Module).createServer({}, (req, res) =>
      handler(req as unknown as Req, res as unknown as Res),
    );
    // A client speaking broken HTTP/2 only loses its own connection.
    server.on('sessionError', () => {});
    return server;
  });
  const sockets = new Set<net.Socket>();

  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    sock.setNoDelay(true);
    sock.setTimeout(FIRST_BYTES_TIMEOUT_MS, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    let head: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      // Not enough bytes to tell yet (only possible for a prefix of "PRI ").
      if (head.length < H2_PREFACE.length && H2_PREFACE.subarray(0, head.length).equals(head)) return;
      sock.removeListener('data', onData);
      sock.setTimeout(0);
      sock.pause();
      sock.unshift(head);
      if (head.subarray(0, H2_PREFACE.length).equals(H2_PREFACE)) {
        h2().emit('connection', sock);
      } else {
        h1.emit('connection', sock);
        sock.resume();
      }
    };
    sock.on('data', onData);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as net.AddressInfo;

  return {
    port: address.port,
    state,
    close: async () => {
      rpc?.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}
