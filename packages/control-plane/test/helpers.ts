// Shared test plumbing: a fresh database per test file, a real server on a random
// port, a small HTTP client, and a fingerprint of every table to prove "nothing changed".
import { randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { Writable } from 'node:stream';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { sql } from 'kysely';
import { createLogger } from '../src/logging.js';
import { openDatabase, type Database } from '../src/db/connect.js';
import { migrate } from '../src/db/migrate.js';
import { buildServer, type App, type ServerDeps } from '../src/server.js';

export const ADMIN_URL = process.env.WRENN_TEST_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
export const REDIS_URL = process.env.WRENN_TEST_REDIS_URL || 'redis://127.0.0.1:6379/0';
export const MAIN_JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/main.js');
export const JWT_SECRET = 'test-secret-' + randomBytes(24).toString('hex');

/** `CREATE DATABASE wrenn_t_<random>` on the test server; drop() removes it. */
export async function createTestDatabase(): Promise<{ url: string; name: string; drop(): Promise<void> }> {
  const name = `wrenn_t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(ADMIN_URL);
  url.pathname = '/' + name;
  return {
    url: url.toString(),
    name,
    async drop() {
      const c = new pg.Client({ connectionString: ADMIN_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

export class LogCapture extends Writable {
  readonly lines: string[] = [];
  private buf = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.buf += chunk.toString();
    const parts = this.buf.split('\n');
    this.buf = parts.pop()!;
    this.lines.push(...parts.filter((l) => l !== ''));
    cb();
  }
  get text(): string {
    return this.lines.join('\n') + this.buf;
  }
}

export interface TestServer {
  app: App;
  database: Database;
  url: string;
  logs: LogCapture;
  api: Api;
  close(): Promise<void>;
}

export type DbKind = 'postgres' | 'pglite';

/** A migrated database of the given kind, and how to get rid of it. */
export async function openTestDatabase(kind: DbKind): Promise<{ database: Database; cleanup(): Promise<void> }> {
  if (kind === 'postgres') {
    const tdb = await createTestDatabase();
    const database = await openDatabase({ databaseUrl: tdb.url });
    await migrate(database.pool);
    return {
      database,
      async cleanup() {
        await database.close();
        await tdb.drop();
      },
    };
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'wrenn-cp-pglite-'));
  const database = await openDatabase({ pgliteDir: path.join(dir, 'pglite') });
  await migrate(database.pool);
  return {
    database,
    async cleanup() {
      await database.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A real server on 127.0.0.1:<random port> over a migrated database. */
export async function startTestServer(
  opts: { kind?: DbKind; database?: Database; deps?: Partial<ServerDeps>; beforeListen?: (app: App) => void } = {},
): Promise<TestServer> {
  let owned: { database: Database; cleanup(): Promise<void> } | undefined;
  const database = opts.database ?? (owned = await openTestDatabase(opts.kind ?? 'postgres')).database;
  const logs = new LogCapture();
  const app = await buildServer({
    db: database.db,
    log: createLogger('debug', logs),
    jwtSecret: JWT_SECRET,
    version: '0.0.0-test',
    ...opts.deps,
  });
  opts.beforeListen?.(app);
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    app,
    database,
    url,
    logs,
    api: new Api(url),
    async close() {
      await app.close();
      await owned?.cleanup();
    },
  };
}

// Response bodies are whatever JSON the server sent; tests check them field by field.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export interface Res<T = Json> {
  status: number;
  body: T;
  headers: Headers;
  text: string;
}

export interface ReqOpts {
  token?: string;
  key?: string;
  body?: unknown;
  /** Sent as-is (for malformed JSON tests). */
  raw?: string;
  headers?: Record<string, string>;
}

export class Api {
  constructor(readonly base: string) {}

  async req<T = Json>(method: string, p: string, o: ReqOpts = {}): Promise<Res<T>> {
    const headers: Record<string, string> = { ...o.headers };
    if (o.token) headers.authorization = `Bearer ${o.token}`;
    if (o.key) headers['x-api-key'] = o.key;
    let body: string | undefined;
    if (o.raw !== undefined) body = o.raw;
    else if (o.body !== undefined) body = JSON.stringify(o.body);
    if (body !== undefined) headers['content-type'] ??= 'application/json';
    const res = await fetch(this.base + p, { method, headers, body, redirect: 'manual' });
    const text = await res.text();
    let parsed: unknown = undefined;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    return { status: res.status, body: parsed as T, headers: res.headers, text };
  }
  get<T = Json>(p: string, o?: ReqOpts) {
    return this.req<T>('GET', p, o);
  }
  post<T = Json>(p: string, o?: ReqOpts) {
    return this.req<T>('POST', p, o);
  }
  patch<T = Json>(p: string, o?: ReqOpts) {
    return this.req<T>('PATCH', p, o);
  }
  delete<T = Json>(p: string, o?: ReqOpts) {
    return this.req<T>('DELETE', p, o);
  }

  /** Signs up a fresh user; returns the AuthResponse plus the password used. */
  async signup(name = 'User', email?: string) {
    const e = email ?? `${name.toLowerCase().replace(/\W/g, '')}-${randomBytes(4).toString('hex')}@example.com`;
    const password = 'Sturdy-' + randomBytes(6).toString('hex');
    const r = await this.post('/v1/auth/signup', { body: { email: e, password, name } });
    if (r.status !== 201) throw new Error(`signup failed: ${r.status} ${r.text}`);
    return {
      ...(r.body as { token: string; user_id: string; team_id: string; email: string; name: string }),
      password,
    };
  }
}

const TABLES = ['teams', 'users', 'users_teams', 'team_api_keys', 'oauth_providers', 'admin_permissions', 'audit_logs'];

/** A fingerprint of every row of every table: equal fingerprints mean nothing changed. */
export async function fingerprint(
  database: Database,
  opts: { except?: string[] } = {},
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const t of TABLES) {
    if (opts.except?.includes(t)) continue;
    const r = await sql<{ n: string; h: string | null }>`
      SELECT count(*)::text AS n, md5(string_agg(x::text, '|' ORDER BY x::text)) AS h FROM ${sql.table(t)} AS x`.execute(
      database.db,
    );
    out[t] = `${r.rows[0]!.n}:${r.rows[0]!.h ?? ''}`;
  }
  return out;
}

export function expectError(res: Res, status: number, code?: string): void {
  const ok =
    res.status === status &&
    typeof res.body?.error?.code === 'string' &&
    typeof res.body?.error?.message === 'string' &&
    (code === undefined || res.body.error.code === code);
  if (!ok) throw new Error(`expected ${status}${code ? ' ' + code : ''}, got ${res.status} ${res.text.slice(0, 300)}`);
}

/** A free TCP port on 127.0.0.1 (for a child process that must know its URL up front). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

export interface ChildControlPlane {
  url: string;
  proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs `node main.js` (serve) with the given environment; resolves once it listens. */
export async function spawnControlPlane(env: Record<string, string>, port?: number): Promise<ChildControlPlane> {
  const p = port ?? (await freePort());
  const proc = spawn(process.execPath, [MAIN_JS], {
    env: { PATH: process.env.PATH, WRENN_CP_LISTEN_ADDR: `127.0.0.1:${p}`, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const deadline = Date.now() + 60_000;
  while (!out.includes('control plane listening')) {
    if (proc.exitCode !== null) throw new Error(`control plane exited early: ${err || out}`);
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`control plane did not start: ${err || out}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return { url: `http://127.0.0.1:${p}`, proc, stdout: () => out, stderr: () => err, exited };
}
