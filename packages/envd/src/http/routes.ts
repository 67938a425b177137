// The plain HTTP routes served next to the Connect RPCs, with E2B envd's
// semantics: /health, /metrics, /envs, /init and /files.
import fs from 'node:fs';
import path from 'node:path';
import type http from 'node:http';
import type * as ZlibModule from 'node:zlib';
import { pipeline as pipelineCb, type Readable, type Writable } from 'node:stream';
import busboy from 'busboy';
import { asUser } from '../creds.js';
import { EnvdError, errnoCode, httpFsError, httpStatusOf } from '../errors.js';
import { basicAuthUser, resolvePath, resolveUser } from '../identity.js';
import type { EnvdState } from '../state.js';
import { lookupUser, type User } from '../users.js';
import { collectMetrics } from './metrics.js';
import { nodeRequire } from '../lazy.js';

/** Request and response of either the HTTP/1.1 or the HTTP/2 server (same compatibility API). */
export type Req = http.IncomingMessage;
export type Res = http.ServerResponse;

const MAX_INIT_BODY = 1 << 20;

/** stream.pipeline as a promise (node:stream/promises would be one more module to load at start-up). */
function pipeline(source: Readable, dest: Writable): Promise<void> {
  return new Promise((resolve, reject) => pipelineCb(source, dest, (err) => (err ? reject(err) : resolve())));
}

/**
 * Copies an upload into a file with backpressure. Unlike pipeline, a write
 * error (disk full) does not destroy the request: the rest of the body is
 * drained so that the client still reads envd's answer (507) instead of a reset.
 */
function copyInto(source: Readable, dest: fs.WriteStream): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      if (err) {
        source.unpipe(dest);
        source.resume();
        dest.destroy();
        reject(err);
      } else {
        resolve();
      }
    };
    dest.on('error', finish);
    dest.on('finish', () => finish());
    // A broken body (client gone, bad gzip data) is the request's fault.
    source.on('error', (err) => finish(new HttpError(400, `upload failed: ${err.message}`)));
    source.on('close', () => {
      if (!source.readableEnded) finish(new HttpError(400, 'upload ended before its body was complete'));
    });
    source.pipe(dest);
  });
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function sendJson(res: Res, status: number, body: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

export function sendError(res: Res, status: number, message: string): void {
  sendJson(res, status, { code: status, message });
}

function toHttpError(err: unknown, p: string): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof EnvdError) return new HttpError(httpStatusOf(err.code), err.rawMessage);
  const [status, message] = httpFsError(err, p);
  return new HttpError(status, message);
}

export class HttpRoutes {
  constructor(private readonly state: EnvdState) {}

  static serves(pathname: string): boolean {
    return ['/health', '/metrics', '/envs', '/init', '/files'].includes(pathname);
  }

  /** Serves `req` if it is one of ours; answers 404 otherwise. */
  async handle(req: Req, res: Res): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://envd');
    try {
      switch (url.pathname) {
        case '/health':
          return this.only(req, ['GET', 'HEAD'], () => {
            res.writeHead(204, { 'cache-control': 'no-store' });
            res.end();
          });
        case '/metrics':
          return await this.only(req, ['GET'], async () => sendJson(res, 200, await collectMetrics()));
        case '/envs':
          return this.only(req, ['GET'], () => sendJson(res, 200, Object.fromEntries(this.state.envVars)));
        case '/init':
          return await this.only(req, ['POST'], () => this.init(req, res));
        case '/files':
          if (req.method === 'GET' || req.method === 'HEAD') return this.download(req, res, url);
          return await this.only(req, ['POST'], () => this.upload(req, res, url));
        default:
          throw new HttpError(404, `no route for ${req.method} ${url.pathname}`);
      }
    } catch (err) {
      const e = toHttpError(err, url.searchParams.get('path') ?? '');
      req.resume(); // discard an unread body so the connection stays usable
      sendError(res, e.status, e.message);
    }
  }

  private only<T>(req: Req, methods: string[], fn: () => T): T {
    if (!methods.includes(req.method ?? '')) throw new HttpError(405, `method ${req.method} not allowed`);
    return fn();
  }

  private user(req: Req, url: URL): User {
    return resolveUser(this.state, url.searchParams.get('username') || basicAuthUser(req.headers.authorization));
  }

  private async init(req: Req, res: Res): Promise<void> {
    let raw = '';
    for await (const chunk of req as AsyncIterable<Buffer>) {
      raw += chunk.toString('utf8');
      if (raw.length > MAX_INIT_BODY) throw new HttpError(413, 'init body too large');
    }
    let body: unknown = {};
    if (raw.trim() !== '') {
      try {
        body = JSON.parse(raw);
      } catch {
        throw new HttpError(400, 'init body is not valid JSON');
      }
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new HttpError(400, 'init body must be a JSON object');
    }
    const b = body as Record<string, unknown>;
    // Validate everything first, then apply: a bad request changes nothing.
    const envVars = new Map<string, string>();
    if (b.envVars !== undefined && b.envVars !== null) {
      if (typeof b.envVars !== 'object' || Array.isArray(b.envVars))
        throw new HttpError(400, 'envVars must be an object');
      for (const [k, v] of Object.entries(b.envVars)) {
        if (typeof v !== 'string') throw new HttpError(400, `envVars.${k} must be a string`);
        if (!k || k.includes('=') || k.includes('\0') || v.includes('\0')) {
          throw new HttpError(400, `invalid environment variable '${k}'`);
        }
        envVars.set(k, v);
      }
    }
    for (const key of ['accessToken', 'defaultUser', 'defaultWorkdir'] as const) {
      if (b[key] !== undefined && b[key] !== null && typeof b[key] !== 'string') {
        throw new HttpError(400, `${key} must be a string`);
      }
    }
    if (b.timestamp !== undefined && b.timestamp !== null) {
      const t = typeof b.timestamp === 'number' ? b.timestamp : Date.parse(String(b.timestamp));
      if (!Number.isFinite(t)) throw new HttpError(400, 'timestamp must be a number or an RFC 3339 date');
    }
    const defaultUser = b.defaultUser as string | undefined;
    if (defaultUser && !lookupUser(defaultUser))
      throw new HttpError(400, `defaultUser '${defaultUser}' does not exist`);
    const workdir = b.defaultWorkdir as string | undefined;
    if (workdir && !workdir.startsWith('/') && workdir !== '~' && !workdir.startsWith('~/')) {
      throw new HttpError(400, 'defaultWorkdir must be an absolute path or start with ~/');
    }
    if (workdir?.includes('\0')) throw new HttpError(400, 'defaultWorkdir contains a NUL byte');

    for (const [k, v] of envVars) this.state.envVars.set(k, v);
    if (typeof b.accessToken === 'string') this.state.accessToken = b.accessToken || undefined;
    if (defaultUser) this.state.defaultUser = defaultUser;
    if (typeof workdir === 'string') this.state.defaultWorkdir = workdir || undefined;
    res.writeHead(204, { 'cache-control': 'no-store' });
    res.end();
  }

  private download(req: Req, res: Res, url: URL): void {
    const user = this.user(req, url);
    const rawPath = url.searchParams.get('path');
    if (!rawPath) throw new HttpError(400, 'the path query parameter is required');
    const p = resolvePath(this.state, user, rawPath);
    let fd: number | undefined;
    let size = 0;
    try {
      asUser(user, () => {
        // O_NONBLOCK: opening a FIFO must not hang envd; regular files read normally.
        fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
        const st = fs.fstatSync(fd);
        if (st.isDirectory()) throw new HttpError(400, `path '${p}' is a directory`);
        if (!st.isFile()) throw new HttpError(400, `path '${p}' is not a regular file`);
        size = st.size;
      });
    } catch (err) {
      if (fd !== undefined) fs.closeSync(fd);
      throw toHttpError(err, p);
    }
    const name = path.basename(p);
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': size,
      'content-disposition': `inline; filename="${name.replace(/[^\x20-\x7e]|["\\]/g, '_')}"; filename*=UTF-8''${encodeURIComponent(name)}`,
      'cache-control': 'no-store',
    });
    if (req.method === 'HEAD') {
      fs.closeSync(fd as number);
      res.end();
      return;
    }
    const stream = fs.createReadStream('', { fd, autoClose: true, start: 0, end: Math.max(0, size - 1) });
    if (size === 0) {
      stream.destroy();
      res.end();
      return;
    }
    pipeline(stream, res).catch(() => {
      // Client went away or the file shrank: the connection is closed, the fd released.
    });
  }

  private async upload(req: Req, res: Res, url: URL): Promise<void> {
    const user = this.user(req, url);
    const queryPath = url.searchParams.get('path');
    let body: Readable = req;
    const encoding = String(req.headers['content-encoding'] ?? 'identity').toLowerCase();
    if (encoding === 'gzip') body = req.pipe((nodeRequire('node:zlib') as typeof ZlibModule).createGunzip());
    else if (encoding !== 'identity') throw new HttpError(415, `unsupported content-encoding '${encoding}'`);

    const contentType = String(req.headers['content-type'] ?? '');
    const written: Array<{ path: string; name: string; type: 'file' }> = [];
    if (/^multipart\/form-data/i.test(contentType)) {
      await this.uploadMultipart(req, body, user, queryPath, written);
    } else {
      if (!queryPath) throw new HttpError(400, 'the path query parameter is required for a non-multipart upload');
      const p = resolvePath(this.state, user, queryPath);
      await this.writeOne(body, user, p);
      written.push({ path: p, name: path.basename(p), type: 'file' });
    }
    sendJson(res, 200, written);
  }

  private uploadMultipart(
    req: Req,
    body: Readable,
    user: User,
    queryPath: string | null,
    written: Array<{ path: string; name: string; type: 'file' }>,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let bb: busboy.Busboy;
      try {
        bb = busboy({ headers: req.headers, preservePath: true });
      } catch (err) {
        reject(new HttpError(400, `bad multipart request: ${(err as Error).message}`));
        return;
      }
      const targets = new Set<string>();
      let failed = false;
      let chain = Promise.resolve();
      const fail = (err: unknown, p: string) => {
        if (failed) return;
        failed = true;
        body.unpipe(bb);
        body.resume();
        reject(toHttpError(err, p));
      };
      bb.on('file', (_field, stream, info) => {
        if (failed) {
          stream.resume();
          return;
        }
        let p: string;
        try {
          const rel = queryPath || info.filename;
          if (!rel) throw new HttpError(400, 'a file part has no filename and no path query parameter was given');
          p = resolvePath(this.state, user, rel);
          if (targets.has(p)) throw new HttpError(400, `path '${p}' appears twice in one upload`);
          targets.add(p);
        } catch (err) {
          stream.resume();
          fail(err, info.filename ?? '');
          return;
        }
        // Files are written one after another, in request order.
        chain = chain.then(async () => {
          if (failed) {
            stream.resume();
            return;
          }
          try {
            await this.writeOne(stream, user, p);
            written.push({ path: p, name: path.basename(p), type: 'file' });
          } catch (err) {
            stream.resume();
            fail(err, p);
          }
        });
      });
      bb.on('error', (err) => fail(new HttpError(400, `bad multipart request: ${(err as Error).message}`), ''));
      bb.on('close', () => {
        void chain.then(() => {
          if (!failed) resolve();
        });
      });
      body.on('error', (err) => fail(new HttpError(400, `upload failed: ${err.message}`), ''));
      body.pipe(bb);
    });
  }

  /**
   * Streams `source` into `p` as `user`: parent directories and the file are
   * created with the user's credentials (so they are the user's), an existing
   * file is truncated. If writing fails, a file this upload created is removed.
   */
  private async writeOne(source: Readable, user: User, p: string): Promise<void> {
    let fd: number | undefined;
    let created = false;
    try {
      asUser(user, () => {
        fs.mkdirSync(path.dirname(p), { recursive: true, mode: 0o755 });
        try {
          fd = fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
          created = true;
        } catch (err) {
          if (errnoCode(err) !== 'EEXIST') throw err;
          fd = fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_TRUNC | fs.constants.O_NONBLOCK);
        }
        const st = fs.fstatSync(fd);
        if (!st.isFile()) throw new HttpError(400, `path '${p}' is not a regular file`);
      });
    } catch (err) {
      if (fd !== undefined) fs.closeSync(fd);
      source.resume();
      throw toHttpError(err, p);
    }
    try {
      await copyInto(source, fs.createWriteStream('', { fd, autoClose: true }));
    } catch (err) {
      if (created) {
        try {
          asUser(user, () => fs.unlinkSync(p));
        } catch {
          // already gone
        }
      }
      throw toHttpError(err, p);
    }
  }
}
