// Typed client for the envd of one capsule (http://<hostIp>:49983): Connect
// clients for process.Process and filesystem.Filesystem, plus the plain HTTP
// routes (/health, /init, /files). Everything goes over HTTP/1.1 with a
// keep-alive agent: the agent never needs client streaming towards envd (PTY
// input uses unary SendInput, uploads use a streamed multipart POST).
import http from 'node:http';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient, type Client } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { Process } from '@wrenn/contracts/gen/process/process_pb';
import { Filesystem } from '@wrenn/contracts/gen/filesystem/filesystem_pb';
import { ConnectError, Code, isConnectionError } from './errors.js';

export const ENVD_PORT = 49983;

export interface EnvdInit {
  envVars?: Record<string, string>;
  defaultUser?: string;
  defaultWorkdir?: string;
}

export class EnvdClient {
  readonly baseUrl: string;
  readonly process: Client<typeof Process>;
  readonly filesystem: Client<typeof Filesystem>;
  private readonly agent: http.Agent;

  constructor(
    readonly hostIp: string,
    readonly port = ENVD_PORT,
  ) {
    this.baseUrl = `http://${hostIp}:${port}`;
    // keepAlive: every exec reuses a warm socket, which keeps the round trip to a few ms.
    this.agent = new http.Agent({ keepAlive: true, keepAliveMsecs: 10_000, maxFreeSockets: 16 });
    const transport = createConnectTransport({
      baseUrl: this.baseUrl,
      httpVersion: '1.1',
      nodeOptions: { agent: this.agent },
      // envd is on this host: compressing process output only burns CPU.
      acceptCompression: [],
    });
    this.process = createClient(Process, transport);
    this.filesystem = createClient(Filesystem, transport);
  }

  /** Call options selecting the capsule user, the way E2B clients do (HTTP Basic, empty password). */
  static userHeaders(user: string | undefined): Record<string, string> {
    if (!user) return {};
    return { authorization: 'Basic ' + Buffer.from(`${user}:`).toString('base64') };
  }

  /** One GET /health; true on a 2xx answer. */
  async health(timeoutMs = 1000): Promise<boolean> {
    try {
      const res = await this.request('GET', '/health', { timeoutMs });
      res.resume();
      return res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300;
    } catch {
      return false;
    }
  }

  /**
   * Polls /health until envd answers. On the create critical path: it polls
   * every 2 ms at first (a refused connection inside the capsule's netns is
   * answered at once), then backs off. `isAlive` lets it give up early.
   */
  async waitReady(timeoutMs: number, isAlive: () => boolean = () => true): Promise<void> {
    const start = Date.now();
    for (;;) {
      const left = timeoutMs - (Date.now() - start);
      if (left <= 0) break;
      if (await this.health(Math.min(left, 1000))) return;
      // A capsule whose init already exited will never answer: fail now, not at the deadline.
      if (!isAlive()) {
        throw new ConnectError('the capsule exited before envd became ready', Code.Unavailable);
      }
      const elapsed = Date.now() - start;
      await sleep(elapsed < 500 ? 2 : elapsed < 2000 ? 20 : 100);
    }
    throw new ConnectError(`envd at ${this.baseUrl} did not become ready within ${timeoutMs} ms`, Code.Unavailable);
  }

  /** POST /init: default user, working directory and environment for later processes. */
  async init(body: EnvdInit, timeoutMs = 10_000): Promise<void> {
    const payload = Buffer.from(JSON.stringify(body));
    const res = await this.request('POST', '/init', {
      timeoutMs,
      headers: { 'content-type': 'application/json', 'content-length': String(payload.length) },
      body: payload,
    });
    await expectOk(res, 'init');
  }

  /**
   * GET /files: resolves with the response stream once envd has answered with
   * 200, so the caller can pipe it chunk by chunk; envd errors become
   * ConnectErrors with the matching code.
   */
  async readFile(path: string, user: string | undefined, signal?: AbortSignal): Promise<http.IncomingMessage> {
    const res = await this.request('GET', '/files' + filesQuery(path, user), {
      signal,
      headers: { 'accept-encoding': 'identity' },
    });
    if (res.statusCode !== 200) await expectOk(res, 'read file');
    return res;
  }

  /**
   * POST /files as multipart/form-data, streamed: the body is written chunk
   * by chunk as `source` yields, honouring backpressure, never buffered whole.
   */
  async writeFile(
    path: string,
    user: string | undefined,
    source: AsyncIterable<Uint8Array> | Uint8Array,
    signal?: AbortSignal,
  ): Promise<void> {
    const boundary = '----wrenn' + randomBytes(12).toString('hex');
    const filename = path.split('/').pop() || 'file';
    const head = Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${encodeURIComponent(filename)}"\r\n` +
        'Content-Type: application/octet-stream\r\n\r\n',
    );
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
    const req = http.request(this.baseUrl + '/files' + filesQuery(path, user), {
      method: 'POST',
      agent: this.agent,
      signal,
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    });
    // envd may answer (e.g. 507 disk full) before the body is complete: keep its answer.
    const response = new Promise<http.IncomingMessage>((resolve, reject) => {
      req.once('response', resolve);
      req.once('error', reject);
    });
    response.catch(() => {});
    const write = async (buf: Uint8Array) => {
      if (!req.write(buf)) {
        await Promise.race([once(req, 'drain'), response.then(() => {})]);
      }
    };
    try {
      await write(head);
      if (source instanceof Uint8Array) await write(source);
      else
        for await (const chunk of source) {
          if (req.destroyed) break;
          await write(chunk);
        }
      req.end(tail);
    } catch (err) {
      req.destroy();
      // An answer envd already sent explains the failure better than the broken pipe.
      const res = await Promise.race([response, sleep(200).then(() => null)]).catch(() => null);
      if (res) await expectOk(res, 'write file');
      throw err;
    }
    await expectOk(await response, 'write file');
  }

  /** Closes idle keep-alive sockets (the capsule is going away). */
  close(): void {
    this.agent.destroy();
  }

  private request(
    method: string,
    pathAndQuery: string,
    opts: { timeoutMs?: number; signal?: AbortSignal; headers?: Record<string, string>; body?: Buffer },
  ): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = http.request(this.baseUrl + pathAndQuery, {
        method,
        agent: this.agent,
        headers: opts.headers,
        signal: opts.signal,
      });
      if (opts.timeoutMs !== undefined) {
        req.setTimeout(opts.timeoutMs, () =>
          req.destroy(Object.assign(new Error('envd timeout'), { code: 'ETIMEDOUT' })),
        );
      }
      req.once('response', resolve);
      req.once('error', (err) => reject(wrapHttpError(err)));
      req.end(opts.body);
    });
  }
}

function filesQuery(path: string, user: string | undefined): string {
  const q = new URLSearchParams({ path });
  if (user) q.set('username', user);
  return '?' + q.toString();
}

function wrapHttpError(err: Error): Error {
  if (err.name === 'AbortError') return new ConnectError('request aborted', Code.Canceled, undefined, undefined, err);
  if (isConnectionError(err)) return new ConnectError(err.message, Code.Unavailable, undefined, undefined, err);
  return err;
}

const HTTP_TO_CODE: Record<number, Code> = {
  400: Code.InvalidArgument,
  401: Code.PermissionDenied,
  403: Code.PermissionDenied,
  404: Code.NotFound,
  409: Code.AlreadyExists,
  413: Code.ResourceExhausted,
  507: Code.ResourceExhausted,
};

/** Resolves for a 2xx answer; otherwise reads envd's `{message}` body (capped) and throws a ConnectError. */
async function expectOk(res: http.IncomingMessage, what: string): Promise<void> {
  const status = res.statusCode ?? 0;
  if (status >= 200 && status < 300) {
    res.resume();
    return;
  }
  let text = '';
  for await (const chunk of res) {
    if (text.length < 4096) text += chunk.toString();
  }
  let message = text.trim();
  try {
    const parsed = JSON.parse(text) as { message?: unknown };
    if (typeof parsed.message === 'string') message = parsed.message;
  } catch {
    // not JSON: keep the text
  }
  const code = HTTP_TO_CODE[status] ?? (status >= 500 ? Code.Internal : Code.Unknown);
  throw new ConnectError(`${what}: ${message || `envd answered HTTP ${status}`}`, code);
}
