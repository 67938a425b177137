// The exported guards later routes build on (platform admin; API key or session),
// and ensureBootstrapAdmin with its command.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseId } from '@wrenn/contracts';
import { actorOf, teamOf } from '../src/auth/guards.js';
import { ensureBootstrapAdmin } from '../src/bootstrap.js';
import type { Database } from '../src/db/connect.js';
import {
  MAIN_JS,
  createTestDatabase,
  expectError,
  openTestDatabase,
  startTestServer,
  type TestServer,
} from './helpers.js';

let database: Database;
let cleanup: () => Promise<void>;
let s: TestServer;
before(async () => {
  ({ database, cleanup } = await openTestDatabase('postgres'));
  s = await startTestServer({
    database,
    beforeListen(app) {
      // Stand-ins for later issues' routes, using the exported guards.
      app.get('/v1/admin/probe', { preHandler: app.wrenn.guards.requireAdmin }, async () => ({ ok: true }));
      app.get('/v1/probe/boom', async () => {
        throw new Error('db password hunter2 at 10.0.0.7:5432');
      });
      app.get('/v1/probe/team', { preHandler: app.wrenn.guards.requireApiKeyOrUser }, async (request) => ({
        team: teamOf(request),
        actor: actorOf(request),
      }));
    },
  });
});
after(async () => {
  await s?.close();
  await cleanup?.();
});

describe('ensureBootstrapAdmin', () => {
  test('creates one admin with a team and a working key, once, even when called concurrently', async () => {
    const input = { email: 'Root@Example.com', password: 'Bootstrap-pass-1', name: 'Root' };
    const results = await Promise.all([1, 2, 3].map(() => ensureBootstrapAdmin(database.db, input)));
    const created = results.filter((r) => r.created);
    assert.equal(created.length, 1);
    const admin = created[0]!;
    assert.match(admin.apiKey!, /^wrn_[0-9a-f]{32}$/);
    for (const r of results) {
      assert.equal(r.userId, admin.userId);
      assert.equal(r.teamId, admin.teamId);
      if (!r.created) assert.equal(r.apiKey, undefined);
    }
    const user = await database.db
      .selectFrom('users')
      .selectAll()
      .where('id', '=', admin.userId)
      .executeTakeFirstOrThrow();
    assert.equal(user.email, 'root@example.com');
    assert.equal(user.is_admin, true);
    assert.equal(user.status, 'active');

    const cur = await s.api.get('/v1/api-keys/current', { key: admin.apiKey });
    assert.equal(cur.status, 200);
    assert.equal(parseId('team', cur.body.team_id), admin.teamId);
    const login = await s.api.post('/v1/auth/login', { body: { email: input.email, password: input.password } });
    assert.equal(parseId('team', login.body.team_id), admin.teamId);
    assert.deepEqual((await s.api.get('/v1/admin/probe', { token: login.body.token })).body, { ok: true });

    // Idempotent: later calls change nothing and return the same admin (by email, else the oldest admin).
    const again = await ensureBootstrapAdmin(database.db, input);
    assert.deepEqual(again, { userId: admin.userId, teamId: admin.teamId, created: false });
    const other = await ensureBootstrapAdmin(database.db, { email: 'someone@example.com', password: 'x' });
    assert.equal(other.userId, admin.userId);
    assert.equal((await database.db.selectFrom('users').select('id').execute()).length, 1);
  });
});

describe('guards', () => {
  test('requireAdmin trusts the database, not the token', async () => {
    const plain = await s.api.signup('NotAdmin');
    expectError(await s.api.get('/v1/admin/probe', { token: plain.token }), 403, 'forbidden');
    expectError(await s.api.get('/v1/admin/probe'), 401);
    const admin = await s.api.post('/v1/auth/login', {
      body: { email: 'root@example.com', password: 'Bootstrap-pass-1' },
    });
    await database.db.updateTable('users').set({ is_admin: false }).where('email', '=', 'root@example.com').execute();
    try {
      // The token still says is_admin=true; the database says no.
      expectError(await s.api.get('/v1/admin/probe', { token: admin.body.token }), 403);
    } finally {
      await database.db.updateTable('users').set({ is_admin: true }).where('email', '=', 'root@example.com').execute();
    }
    assert.equal((await s.api.get('/v1/admin/probe', { token: admin.body.token })).status, 200);
  });

  test('requireApiKeyOrUser resolves the team and the actor from either credential', async () => {
    const u = await s.api.signup('Either');
    const key = (await s.api.post('/v1/api-keys', { token: u.token, body: { name: 'either' } })).body;
    const byKey = await s.api.get('/v1/probe/team', { key: key.key });
    assert.deepEqual(byKey.body, {
      team: { id: parseId('team', u.team_id), role: null },
      actor: { type: 'api_key', id: key.id, name: 'either' },
    });
    const byJwt = await s.api.get('/v1/probe/team', { token: u.token });
    assert.deepEqual(byJwt.body, {
      team: { id: parseId('team', u.team_id), role: 'owner' },
      actor: { type: 'user', id: u.user_id, name: 'Either' },
    });
    // A key, when present, is what counts (a bad key is not rescued by a good token).
    expectError(
      await s.api.get('/v1/probe/team', { key: 'wrn_' + '0'.repeat(32), token: u.token }),
      401,
      'invalid_api_key',
    );
    expectError(await s.api.get('/v1/probe/team'), 401);
  });
});

describe('internal errors', () => {
  test('are a 500 with the error shape that reveals nothing; the details go to the log', async () => {
    const r = await s.api.get('/v1/probe/boom');
    expectError(r, 500, 'internal_error');
    assert.equal(r.body.error.message, 'internal server error');
    assert.ok(!r.text.includes('hunter2') && !r.text.includes('10.0.0.7'));
    assert.ok(s.logs.lines.some((l) => l.includes('"msg":"internal error"') && l.includes('hunter2')));
  });
});

describe('bootstrap-admin command', () => {
  test('writes the key to a 0600 file, and is idempotent', async () => {
    const fresh = await createTestDatabase();
    const dir = mkdtempSync(path.join(tmpdir(), 'wrenn-cp-boot-'));
    const keyFile = path.join(dir, 'admin.key');
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [MAIN_JS, 'bootstrap-admin', ...args], {
        env: {
          PATH: process.env.PATH,
          DATABASE_URL: fresh.url,
          WRENN_DATA_DIR: dir,
          WRENN_ADMIN_PASSWORD: 'Env-pass-for-admin',
        },
        encoding: 'utf8',
        timeout: 60_000,
      });
    try {
      const first = run('--email', 'ops@example.com', '--name', 'Ops', '--api-key-out', keyFile);
      assert.equal(first.status, 0, first.stderr);
      const out = JSON.parse(first.stdout);
      assert.equal(out.created, true);
      assert.match(out.user_id, /^usr-[0-9a-z]{25}$/);
      assert.match(out.team_id, /^team-[0-9a-z]{25}$/);
      assert.equal(out.api_key_file, keyFile);
      assert.equal(statSync(keyFile).mode & 0o777, 0o600);
      const key = readFileSync(keyFile, 'utf8').trim();
      assert.match(key, /^wrn_[0-9a-f]{32}$/);
      assert.ok(!first.stdout.includes(key), 'the key goes to the file only');

      const second = run('--email', 'ops@example.com', '--api-key-out', keyFile);
      assert.equal(second.status, 0, second.stderr);
      assert.deepEqual(JSON.parse(second.stdout), { created: false, user_id: out.user_id, team_id: out.team_id });
      assert.equal(readFileSync(keyFile, 'utf8').trim(), key, 'the key file is left alone');

      const weak = spawnSync(
        process.execPath,
        [MAIN_JS, 'bootstrap-admin', '--email', 'x@example.com', '--password', 'aaaaaaaa'],
        {
          env: { PATH: process.env.PATH, DATABASE_URL: (await createFreshUrl()).url, WRENN_DATA_DIR: dir },
          encoding: 'utf8',
        },
      );
      assert.equal(weak.status, 1);
      assert.match(weak.stderr, /^wrenn-control-plane: bootstrap admin: password is too repetitive\n$/);
    } finally {
      await fresh.drop();
      for (const d of extra) await d.drop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const extra: Awaited<ReturnType<typeof createTestDatabase>>[] = [];
async function createFreshUrl() {
  const d = await createTestDatabase();
  extra.push(d);
  return d;
}
