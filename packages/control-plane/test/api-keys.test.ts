// API keys: creation, listing, X-API-Key auth, revocation (in-process and across
// control planes through real Redis), team scoping and batched last_used.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { formatId, parseId } from '@wrenn/contracts';
import pino from 'pino';
import { openRedis, type RedisHandle } from '../src/redis.js';
import { REDIS_URL, expectError, fingerprint, openTestDatabase, startTestServer, type TestServer } from './helpers.js';
import type { Database } from '../src/db/connect.js';

let database: Database;
let cleanup: () => Promise<void>;
let s: TestServer;
before(async () => {
  ({ database, cleanup } = await openTestDatabase('postgres'));
  // A long flush interval: last_used must only reach the database on flush or shutdown.
  s = await startTestServer({ database, deps: { apiKeyOptions: { flushIntervalMs: 3_600_000 } } });
});
after(async () => {
  await s?.close();
  await cleanup?.();
});

describe('api keys', () => {
  test('create shows the key once, stores only its hash, and the key authenticates', async () => {
    const u = await s.api.signup('Keys');
    const res = await s.api.post('/v1/api-keys', { token: u.token, body: { name: ' ci deploy ' } });
    assert.equal(res.status, 201, res.text);
    const k = res.body;
    assert.match(k.key, /^wrn_[0-9a-f]{32}$/);
    assert.equal(k.key_prefix, k.key.slice(0, 10));
    assert.equal(k.name, 'ci deploy');
    assert.equal(k.team_id, u.team_id);
    assert.equal(k.created_by, u.user_id);
    assert.equal(k.last_used, null);
    assert.match(k.id, /^key-[0-9a-z]{25}$/);

    const row = await database.db
      .selectFrom('team_api_keys')
      .selectAll()
      .where('id', '=', parseId('apiKey', k.id))
      .executeTakeFirstOrThrow();
    assert.equal(row.key_hash, createHash('sha256').update(k.key).digest('hex'));
    assert.equal(row.key_prefix, k.key_prefix);
    assert.ok(!JSON.stringify(row).includes(k.key), 'the plaintext key is not stored');

    const list = await s.api.get('/v1/api-keys', { token: u.token });
    assert.equal(list.status, 200);
    assert.equal(list.body.length, 1);
    assert.equal(list.body[0].creator_email, u.email);
    assert.ok(!('key' in list.body[0]) && !('key_hash' in list.body[0]));
    assert.ok(!list.text.includes(k.key) && !list.text.includes(row.key_hash));

    const cur = await s.api.get('/v1/api-keys/current', { key: k.key });
    assert.equal(cur.status, 200, cur.text);
    assert.equal(cur.body.id, k.id);
    assert.equal(cur.body.team_id, u.team_id);
    assert.equal(cur.body.name, 'ci deploy');
    assert.ok(!cur.text.includes(k.key));

    // Default name.
    const unnamed = await s.api.post('/v1/api-keys', { token: u.token, body: {} });
    assert.equal(unnamed.body.name, 'Unnamed API Key');
  });

  test('keys are managed with a session, not with a key; bad input changes nothing', async () => {
    const u = await s.api.signup('KeyRules');
    const k = (await s.api.post('/v1/api-keys', { token: u.token, body: { name: 'k' } })).body;
    await s.app.wrenn.audit.drain();
    const fp = await fingerprint(database);
    expectError(await s.api.post('/v1/api-keys', { key: k.key, body: { name: 'x' } }), 401);
    expectError(await s.api.get('/v1/api-keys', { key: k.key }), 401);
    expectError(await s.api.post('/v1/api-keys', { token: u.token, body: { name: 'x'.repeat(101) } }), 400);
    expectError(await s.api.post('/v1/api-keys', { token: u.token, body: { name: 'x', team_id: u.team_id } }), 400);
    expectError(await s.api.post('/v1/api-keys', { token: u.token, body: { name: ['x'] } }), 400);
    const bad = await s.api.delete('/v1/api-keys/key-123', { token: u.token });
    expectError(bad, 400, 'invalid_request');
    assert.match(bad.body.error.message, /\bid\b/);
    for (const h of ['', 'wrn_', 'wrn_' + 'g'.repeat(32), k.key + '0', k.key.toUpperCase(), 'Bearer ' + k.key]) {
      expectError(await s.api.get('/v1/api-keys/current', { headers: { 'x-api-key': h } }), 401);
    }
    expectError(await s.api.get('/v1/api-keys/current'), 401);
    expectError(await s.api.get('/v1/api-keys/current', { token: u.token }), 401);
    await s.app.wrenn.audit.drain();
    assert.deepEqual(await fingerprint(database), fp);
  });

  test("another team's key is 404 and stays usable; revoked keys are 401 at once", async () => {
    const a = await s.api.signup('TeamA');
    const b = await s.api.signup('TeamB');
    const ka = (await s.api.post('/v1/api-keys', { token: a.token, body: { name: 'a' } })).body;
    const kb = (await s.api.post('/v1/api-keys', { token: b.token, body: { name: 'b' } })).body;
    assert.equal((await s.api.get('/v1/api-keys/current', { key: ka.key })).status, 200); // now cached

    await s.app.wrenn.audit.drain();
    const fp = await fingerprint(database);
    expectError(await s.api.delete(`/v1/api-keys/${ka.id}`, { token: b.token }), 404, 'api_key_not_found');
    expectError(
      await s.api.delete(`/v1/api-keys/${formatId('apiKey', '9d3c1a52-0000-4000-8000-000000000000')}`, {
        token: b.token,
      }),
      404,
    );
    assert.deepEqual(await fingerprint(database), fp);
    assert.ok(!(await s.api.get('/v1/api-keys', { token: b.token })).text.includes(ka.id));
    assert.equal((await s.api.get('/v1/api-keys/current', { key: ka.key })).status, 200);

    assert.equal((await s.api.delete(`/v1/api-keys/${ka.id}`, { token: a.token })).status, 204);
    // Revoked: rejected immediately even though it was cached a moment ago.
    expectError(await s.api.get('/v1/api-keys/current', { key: ka.key }), 401, 'invalid_api_key');
    expectError(await s.api.delete(`/v1/api-keys/${ka.id}`, { token: a.token }), 404);
    assert.equal((await s.api.get('/v1/api-keys/current', { key: kb.key })).status, 200);
  });

  test("deleting a team stops its keys; a removed member's session cannot manage the team's keys", async () => {
    const owner = await s.api.signup('KeyOwner');
    const member = await s.api.signup('KeyMember');
    const team = (await s.api.post('/v1/teams', { token: owner.token, body: { name: 'Keyed' } })).body;
    await s.api.post(`/v1/teams/${team.id}/members`, { token: owner.token, body: { email: member.email } });
    const switched = await s.api.post('/v1/auth/switch-team', { token: member.token, body: { team_id: team.id } });
    const k = (await s.api.post('/v1/api-keys', { token: switched.body.token, body: { name: 'm' } })).body;
    assert.equal(k.team_id, team.id);
    assert.equal((await s.api.get('/v1/api-keys/current', { key: k.key })).status, 200);

    await s.api.delete(`/v1/teams/${team.id}/members/${member.user_id}`, { token: owner.token });
    // The JWT still names the team, but membership is checked in the database.
    expectError(await s.api.get('/v1/api-keys', { token: switched.body.token }), 403, 'not_a_member');
    expectError(await s.api.get('/v1/audit-logs', { token: switched.body.token }), 403, 'not_a_member');

    assert.equal((await s.api.delete(`/v1/teams/${team.id}`, { token: owner.token })).status, 204);
    expectError(await s.api.get('/v1/api-keys/current', { key: k.key }), 401);
    const left = await database.db
      .selectFrom('team_api_keys')
      .select('id')
      .where('team_id', '=', parseId('team', team.id))
      .execute();
    assert.deepEqual(left, []);
  });

  test('last_used is batched in memory and written on flush, not per request', async () => {
    const u = await s.api.signup('LastUsed');
    const k = (await s.api.post('/v1/api-keys', { token: u.token, body: { name: 'lu' } })).body;
    const id = parseId('apiKey', k.id);
    for (let i = 0; i < 5; i++) assert.equal((await s.api.get('/v1/api-keys/current', { key: k.key })).status, 200);
    const stored = async () =>
      (await database.db.selectFrom('team_api_keys').select('last_used').where('id', '=', id).executeTakeFirstOrThrow())
        .last_used;
    assert.equal(await stored(), null, 'no write per request');
    // The listing already shows the pending value.
    const listed = (await s.api.get('/v1/api-keys', { token: u.token })).body.find(
      (x: { id: string }) => x.id === k.id,
    );
    assert.ok(listed.last_used);
    await s.app.wrenn.apiKeys.flush();
    const written = await stored();
    assert.ok(written instanceof Date);
    assert.equal(written.toISOString(), listed.last_used);
    // A flush never moves last_used backwards.
    await database.db
      .updateTable('team_api_keys')
      .set({ last_used: new Date(Date.now() + 60_000) })
      .where('id', '=', id)
      .execute();
    await s.api.get('/v1/api-keys/current', { key: k.key });
    await s.app.wrenn.apiKeys.flush();
    assert.ok((await stored())!.getTime() > Date.now());
  });
});

describe('api keys across control planes (Redis)', () => {
  let r1: RedisHandle;
  let r2: RedisHandle;
  let cp1: TestServer;
  let cp2: TestServer;
  before(async () => {
    const log = pino({ level: 'silent' });
    r1 = await openRedis(REDIS_URL, log);
    r2 = await openRedis(REDIS_URL, log);
    // A long cache TTL, so only the Redis message can explain a prompt rejection.
    const apiKeyOptions = { cacheTtlMs: 600_000 };
    cp1 = await startTestServer({ database, deps: { revocationBus: r1.revocationBus, apiKeyOptions } });
    cp2 = await startTestServer({ database, deps: { revocationBus: r2.revocationBus, apiKeyOptions } });
  });
  after(async () => {
    await cp1?.close();
    await cp2?.close();
    await r1?.close();
    await r2?.close();
  });

  test('a key revoked on one control plane is rejected by the other', async () => {
    const u = await cp1.api.signup('Multi');
    const k = (await cp1.api.post('/v1/api-keys', { token: u.token, body: { name: 'multi' } })).body;
    assert.equal((await cp2.api.get('/v1/api-keys/current', { key: k.key })).status, 200); // cached on cp2
    assert.equal((await cp1.api.delete(`/v1/api-keys/${k.id}`, { token: u.token })).status, 204);
    let status = 200;
    for (let i = 0; i < 50 && status === 200; i++) {
      await new Promise((r) => setTimeout(r, 20));
      status = (await cp2.api.get('/v1/api-keys/current', { key: k.key })).status;
    }
    assert.equal(status, 401);
  });
});
