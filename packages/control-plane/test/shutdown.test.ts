// Graceful shutdown: on SIGTERM the server stops accepting, finishes the
// request in flight, flushes, closes the database and exits 0.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { Api, REDIS_URL, createTestDatabase, spawnControlPlane, startTestServer } from './helpers.js';

let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
let dir: string;
before(async () => {
  tdb = await createTestDatabase();
  dir = mkdtempSync(path.join(tmpdir(), 'wrenn-cp-shutdown-'));
});
after(async () => {
  await tdb?.drop();
  rmSync(dir, { recursive: true, force: true });
});

describe('graceful shutdown', () => {
  test('closing in-process: the request in flight finishes and its connection closes', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const s = await startTestServer({
      beforeListen(app) {
        app.get('/v1/probe/slow', async () => {
          await held;
          return { done: true };
        });
      },
    });
    const slow = fetch(`${s.url}/v1/probe/slow`);
    await new Promise((r) => setTimeout(r, 100));
    const closing = s.close();
    await new Promise((r) => setTimeout(r, 100));
    await assert.rejects(fetch(`${s.url}/health`, { headers: { connection: 'close' } }));
    release();
    const done = await slow;
    assert.equal(done.status, 200);
    assert.equal(done.headers.get('connection'), 'close');
    assert.deepEqual(await done.json(), { done: true });
    await closing;
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`${signal} while a request is in flight: it completes, then the process exits 0`, async () => {
      const cp = await spawnControlPlane({
        DATABASE_URL: tdb.url,
        REDIS_URL,
        WRENN_DATA_DIR: dir,
        JWT_SECRET: 'shutdown-test-secret-0123456789abcdef',
      });
      const api = new Api(cp.url);
      const u = await api.signup('Shutdown');
      const key = (await api.post('/v1/api-keys', { token: u.token, body: { name: 'sd' } })).body;
      assert.equal((await api.get('/v1/api-keys/current', { key: key.key })).status, 200);

      // A login whose body arrives in two halves: the request is in flight when the signal lands.
      const body = JSON.stringify({ email: u.email, password: u.password });
      const sock = connect(Number(new URL(cp.url).port), '127.0.0.1');
      await new Promise<void>((resolve) => sock.on('connect', () => resolve()));
      let response = '';
      sock.on('data', (d) => (response += d.toString()));
      const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
      sock.write(
        `POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n` +
          body.slice(0, 10),
      );
      await new Promise((r) => setTimeout(r, 300));
      cp.proc.kill(signal);
      await new Promise((r) => setTimeout(r, 500));

      // No longer accepting new connections.
      await assert.rejects(fetch(`${cp.url}/health`), 'a new connection after the signal should fail');
      assert.equal(cp.proc.exitCode, null, 'still running while the request is unfinished');

      sock.write(body.slice(10));
      await closed;
      assert.match(response, /^HTTP\/1\.1 200 OK/);
      assert.match(response, /"token":"ey/);

      const { code } = await cp.exited;
      assert.equal(code, 0, cp.stderr());
      assert.match(cp.stdout(), /"msg":"control plane stopped"/);
      assert.equal(cp.stderr(), '');

      // The batched last_used of the key was written on the way out.
      const c = new pg.Client({ connectionString: tdb.url });
      await c.connect();
      try {
        const r = await c.query('SELECT last_used FROM team_api_keys WHERE key_prefix = $1', [key.key_prefix]);
        assert.ok(r.rows[0].last_used instanceof Date);
      } finally {
        await c.end();
      }
    });
  }
});
