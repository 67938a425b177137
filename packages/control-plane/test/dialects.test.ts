// The same SQL on both databases: one representative flow, run against real
// PostgreSQL and against embedded PGlite (which also has to survive a reopen).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openDatabase } from '../src/db/connect.js';
import { migrate } from '../src/db/migrate.js';
import {
  Api,
  expectError,
  fingerprint,
  spawnControlPlane,
  startTestServer,
  type Json,
  type TestServer,
} from './helpers.js';

async function representativeFlow(s: TestServer): Promise<void> {
  const api = s.api;
  // Signup and login.
  const owner = await api.signup('Dialect Owner');
  const friend = await api.signup('Dialect Friend');
  const login = await api.post('/v1/auth/login', { body: { email: owner.email, password: owner.password } });
  assert.equal(login.status, 200, login.text);
  const dup = await api.post('/v1/auth/signup', {
    body: { email: owner.email, password: 'Fine-pass-42', name: 'Dup' },
  });
  expectError(dup, 409, 'email_taken');

  // API key create, use, revoke.
  const key = (await api.post('/v1/api-keys', { token: login.body.token, body: { name: 'flow' } })).body;
  assert.equal((await api.get('/v1/api-keys/current', { key: key.key })).body.id, key.id);
  await s.app.wrenn.apiKeys.flush();
  const listed = (await api.get('/v1/api-keys', { token: owner.token })).body as Json[];
  assert.equal(listed.length, 1);
  assert.ok(listed[0].last_used);
  assert.equal((await api.delete(`/v1/api-keys/${key.id}`, { token: owner.token })).status, 204);
  expectError(await api.get('/v1/api-keys/current', { key: key.key }), 401);

  // Team and member flow.
  const team = (await api.post('/v1/teams', { token: owner.token, body: { name: 'Dialect team' } })).body;
  assert.equal(
    (await api.post(`/v1/teams/${team.id}/members`, { token: owner.token, body: { email: friend.email } })).status,
    201,
  );
  assert.equal(
    (await api.patch(`/v1/teams/${team.id}/members/${friend.user_id}`, { token: owner.token, body: { role: 'admin' } }))
      .status,
    204,
  );
  const detail = (await api.get(`/v1/teams/${team.id}`, { token: friend.token })).body;
  assert.deepEqual(
    detail.members.map((m: Json) => m.role),
    ['owner', 'admin'],
  );
  expectError(await api.get(`/v1/teams/${owner.team_id}`, { token: friend.token }), 404);
  const search = (
    await api.get(`/v1/users/search?email=${encodeURIComponent(friend.email.slice(0, 8))}`, { token: owner.token })
  ).body;
  assert.ok(search.some((r: Json) => r.email === friend.email));

  // Audit query with filters and a cursor.
  for (let i = 0; i < 4; i++) await api.post('/v1/api-keys', { token: owner.token, body: { name: `k${i}` } });
  await s.app.wrenn.audit.drain();
  const all = (await api.get('/v1/audit-logs?resource_type=api_key,member&limit=200', { token: owner.token })).body
    .items;
  assert.deepEqual(
    all.map((i: Json) => `${i.resource_type}.${i.action}`),
    ['api_key.create', 'api_key.create', 'api_key.create', 'api_key.create', 'api_key.revoke', 'api_key.create'],
  );
  const p1 = (await api.get('/v1/audit-logs?resource_type=api_key&action=create&limit=2', { token: owner.token })).body;
  assert.equal(p1.items.length, 2);
  const p2 = (
    await api.get(
      `/v1/audit-logs?resource_type=api_key&action=create&limit=2&before=${encodeURIComponent(p1.next_before)}&before_id=${p1.next_before_id}`,
      { token: owner.token },
    )
  ).body;
  const p3 = (
    await api.get(
      `/v1/audit-logs?resource_type=api_key&action=create&limit=2&before=${encodeURIComponent(p2.next_before)}&before_id=${p2.next_before_id}`,
      { token: owner.token },
    )
  ).body;
  assert.deepEqual(
    [...p1.items, ...p2.items, ...p3.items].map((i: Json) => i.id),
    all.filter((i: Json) => i.action === 'create').map((i: Json) => i.id),
  );
  assert.equal(p3.items.length, 1);
  assert.equal(p3.next_before, undefined);

  // Bad input changes nothing here either.
  await s.app.wrenn.audit.drain();
  const fp = await fingerprint(s.database);
  expectError(await api.post('/v1/teams', { token: owner.token, body: { name: 'bad;name' } }), 400);
  expectError(
    await api.post(`/v1/teams/${team.id}/members`, { token: owner.token, body: { email: friend.email } }),
    409,
  );
  assert.deepEqual(await fingerprint(s.database), fp);
}

describe('same SQL on both databases', () => {
  test('PostgreSQL', async () => {
    const s = await startTestServer({ kind: 'postgres' });
    try {
      assert.equal(s.database.kind, 'postgres');
      await representativeFlow(s);
    } finally {
      await s.close();
    }
  });

  test('embedded PGlite, persisted across a reopen', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'wrenn-cp-pglite-'));
    const pgliteDir = path.join(dir, 'pglite');
    try {
      const database = await openDatabase({ pgliteDir });
      assert.equal(database.kind, 'pglite');
      await migrate(database.pool);
      const s = await startTestServer({ database });
      let email: string;
      try {
        await representativeFlow(s);
        email = (await s.api.signup('Persisted')).email;
      } finally {
        await s.close();
        await database.close();
      }
      const reopened = await openDatabase({ pgliteDir });
      try {
        assert.deepEqual(await migrate(reopened.pool), []);
        const row = await reopened.db.selectFrom('users').select('email').where('email', '=', email).executeTakeFirst();
        assert.equal(row?.email, email);
      } finally {
        await reopened.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('without DATABASE_URL, main.js serves from PGlite in the data directory', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'wrenn-cp-default-'));
    try {
      const cp = await spawnControlPlane({ WRENN_DATA_DIR: dir });
      try {
        assert.match(cp.stdout(), /"database":"pglite"/);
        const api = new Api(cp.url);
        const u = await api.signup('Embedded');
        assert.equal((await api.get('/v1/me', { token: u.token })).body.email, u.email);
      } finally {
        cp.proc.kill('SIGTERM');
      }
      assert.equal((await cp.exited).code, 0, cp.stderr());
      assert.ok(statSync(path.join(dir, 'pglite', 'PG_VERSION')).isFile());
      assert.equal(statSync(path.join(dir, 'jwt-secret')).mode & 0o777, 0o600);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
