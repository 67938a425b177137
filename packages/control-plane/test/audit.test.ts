// The audit log: events written by every auth, team, member and API-key action,
// scope visibility by role, filters, cursor pagination, append-only storage.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PLATFORM_UUID, formatId } from '@wrenn/contracts';
import { sql } from 'kysely';
import { expectError, fingerprint, startTestServer, type Json, type TestServer } from './helpers.js';

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(async () => {
  await s?.close();
});

async function logs(token: string, query = ''): Promise<Json> {
  await s.app.wrenn.audit.drain();
  const r = await s.api.get(`/v1/audit-logs${query}`, { token });
  assert.equal(r.status, 200, r.text);
  return r.body;
}

describe('audit log', () => {
  test('every action writes its event with the right actor and scope', async () => {
    const owner = await s.api.signup('AuditOwner');
    const member = await s.api.signup('AuditMember');
    const t = owner.token;
    await s.api.post('/v1/auth/login', { body: { email: owner.email, password: owner.password } });
    await s.api.patch(`/v1/teams/${owner.team_id}`, { token: t, body: { name: 'Audited' } });
    await s.api.post(`/v1/teams/${owner.team_id}/members`, { token: t, body: { email: member.email } });
    await s.api.patch(`/v1/teams/${owner.team_id}/members/${member.user_id}`, { token: t, body: { role: 'admin' } });
    await s.api.patch(`/v1/teams/${owner.team_id}/members/${member.user_id}`, { token: t, body: { role: 'member' } });
    const key = (await s.api.post('/v1/api-keys', { token: t, body: { name: 'audited key' } })).body;
    await s.api.delete(`/v1/api-keys/${key.id}`, { token: t });
    const t2 = (await s.api.post('/v1/teams', { token: t, body: { name: 'Second' } })).body;
    await s.api.post('/v1/auth/switch-team', { token: t, body: { team_id: t2.id } });
    await s.api.patch('/v1/me', { token: t, body: { name: 'Audit Owner' } });
    await s.api.post('/v1/me/password', {
      token: t,
      body: { current_password: owner.password, new_password: 'Another-pass-77' },
    });
    const sw = await s.api.post('/v1/auth/switch-team', { token: member.token, body: { team_id: owner.team_id } });
    await s.api.post(`/v1/teams/${owner.team_id}/leave`, { token: sw.body.token });
    await s.api.post(`/v1/teams/${owner.team_id}/members`, { token: t, body: { email: member.email } });
    await s.api.delete(`/v1/teams/${owner.team_id}/members/${member.user_id}`, { token: t });

    const items = (await logs(t, '?limit=200')).items as Json[];
    const seen = items.map((i) => `${i.resource_type}.${i.action}`).reverse();
    assert.deepEqual(seen, [
      'user.signup',
      'user.login',
      'team.rename',
      'member.add',
      'member.role_update',
      'member.role_update',
      'api_key.create',
      'api_key.revoke',
      'user.rename',
      'user.password_change',
      'team.switch',
      'member.leave',
      'member.add',
      'member.remove',
    ]);
    const byAction = (rt: string, a: string) => items.find((i) => i.resource_type === rt && i.action === a);
    const created = byAction('api_key', 'create');
    assert.equal(created.actor_type, 'user');
    assert.equal(created.actor_id, owner.user_id);
    assert.equal(created.actor_name, 'AuditOwner');
    assert.equal(created.resource_id, key.id);
    assert.deepEqual(created.metadata, { name: 'audited key', key_prefix: key.key_prefix });
    assert.equal(byAction('api_key', 'revoke').status, 'warning');
    assert.deepEqual(byAction('team', 'rename').metadata, { old_name: "AuditOwner's Team", new_name: 'Audited' });
    assert.equal(byAction('member', 'add').scope, 'admin');
    assert.equal(byAction('member', 'leave').actor_id, member.user_id);
    assert.match(items[0].id, /^log-[0-9a-z]{25}$/);
    assert.match(items[0].created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);

    // The new team has its own log; deleting it is recorded where the platform admins look.
    assert.deepEqual(
      (
        await logs((await s.api.post('/v1/auth/switch-team', { token: t, body: { team_id: t2.id } })).body.token)
      ).items.map((i: Json) => `${i.resource_type}.${i.action}`),
      ['team.switch', 'team.switch', 'team.create'],
    );
    await s.api.delete(`/v1/teams/${t2.id}`, { token: t });
    await s.app.wrenn.audit.drain();
    const platform = await s.database.db
      .selectFrom('audit_logs')
      .selectAll()
      .where('team_id', '=', PLATFORM_UUID)
      .where('resource_id', '=', t2.id)
      .execute();
    assert.equal(platform.length, 1);
    assert.equal(platform[0]!.action, 'delete');
    assert.equal(platform[0]!.scope, 'admin');
  });

  test('members see team scope only; owners and admins also see admin scope (role from the database)', async () => {
    const owner = await s.api.signup('ScopeOwner');
    const member = await s.api.signup('ScopeMember');
    await s.api.post(`/v1/teams/${owner.team_id}/members`, { token: owner.token, body: { email: member.email } });
    const mt = (await s.api.post('/v1/auth/switch-team', { token: member.token, body: { team_id: owner.team_id } }))
      .body.token;
    await s.api.post('/v1/api-keys', { token: owner.token, body: { name: 'visible' } });

    const asMember = (await logs(mt)).items as Json[];
    assert.ok(asMember.length > 0);
    assert.ok(asMember.every((i) => i.scope === 'team'));
    assert.ok(asMember.some((i) => i.action === 'create' && i.resource_type === 'api_key'));
    const asOwner = (await logs(owner.token)).items as Json[];
    assert.ok(asOwner.some((i) => i.scope === 'admin' && i.resource_type === 'member'));

    // Promoted in the database: the old token (role "member") now sees admin scope too.
    await s.api.patch(`/v1/teams/${owner.team_id}/members/${member.user_id}`, {
      token: owner.token,
      body: { role: 'admin' },
    });
    assert.ok(((await logs(mt)).items as Json[]).some((i) => i.scope === 'admin'));
  });

  test('filters (repeated and comma-separated) and cursor pagination', async () => {
    const u = await s.api.signup('Pager');
    const names: string[] = [];
    for (let i = 0; i < 7; i++) {
      const k = (await s.api.post('/v1/api-keys', { token: u.token, body: { name: `k${i}` } })).body;
      names.push(k.name);
      if (i % 2 === 0) await s.api.delete(`/v1/api-keys/${k.id}`, { token: u.token });
    }
    const all = (await logs(u.token, '?resource_type=api_key&limit=200')).items as Json[];
    assert.equal(all.length, 11);
    assert.deepEqual(((await logs(u.token, '?resource_type=api_key&action=revoke')).items as Json[]).length, 4);
    const both = (await logs(u.token, '?action=revoke,signup&action=create')).items as Json[];
    assert.deepEqual([...new Set(both.map((i) => i.action))].sort(), ['create', 'revoke', 'signup']);
    const multi = (await logs(u.token, '?resource_type=user&resource_type=api_key&limit=200')).items as Json[];
    assert.equal(multi.length, all.length + 1);

    // Walk pages of 3: every entry exactly once, newest first, no next cursor after the end.
    const walked: Json[] = [];
    let q = '?resource_type=api_key&limit=3';
    for (let page = 0; page < 10; page++) {
      const body = await logs(u.token, q);
      walked.push(...body.items);
      if (!body.next_before) break;
      assert.equal(body.items.length, 3);
      q = `?resource_type=api_key&limit=3&before=${encodeURIComponent(body.next_before)}&before_id=${body.next_before_id}`;
    }
    assert.deepEqual(
      walked.map((i) => i.id),
      all.map((i) => i.id),
    );
    const times = walked.map((i) => i.created_at);
    assert.deepEqual([...times].sort().reverse(), times);

    // `before` alone is a strict time cursor.
    const cut = all[4].created_at;
    const older = (await logs(u.token, `?resource_type=api_key&limit=200&before=${encodeURIComponent(cut)}`))
      .items as Json[];
    assert.ok(older.every((i) => i.created_at < cut));
  });

  test('bad query parameters are 400 naming the parameter', async () => {
    const u = await s.api.signup('BadQuery');
    const cases: [string, RegExp][] = [
      ['?limit=0', /limit/],
      ['?limit=201', /limit/],
      ['?limit=abc', /limit/],
      ['?limit=-1', /limit/],
      ['?before=yesterday', /before/],
      ['?before=2024-13-45T99:00:00Z', /before/],
      ['?before_id=log-abc&before=2024-01-01T00:00:00Z', /before_id/],
      [`?before_id=${formatId('auditLog', PLATFORM_UUID)}`, /before_id needs before/],
      ['?resource_type=a%20b', /resource_type/],
      ['?action=' + 'x'.repeat(70), /action/],
      ['?unknown=1', /unknown property/],
    ];
    for (const [q, re] of cases) {
      const r = await s.api.get(`/v1/audit-logs${q}`, { token: u.token });
      expectError(r, 400, 'invalid_request');
      assert.match(r.body.error.message, re, q);
    }
    const key = (await s.api.post('/v1/api-keys', { token: u.token, body: {} })).body.key;
    expectError(await s.api.get('/v1/audit-logs', { key }), 401);
  });

  test('rows cannot be changed or deleted', async () => {
    await s.app.wrenn.audit.drain();
    const fp = await fingerprint(s.database);
    await assert.rejects(sql`UPDATE audit_logs SET action = 'forged'`.execute(s.database.db), /append-only/);
    await assert.rejects(sql`DELETE FROM audit_logs`.execute(s.database.db), /append-only/);
    assert.deepEqual(await fingerprint(s.database), fp);
  });

  test('a failing audit write is logged and never fails the request', async () => {
    const u = await s.api.signup('AuditFail');
    // An entry the database refuses (bad scope): the caller is unaffected, the failure is logged.
    s.app.wrenn.audit.record({
      teamId: PLATFORM_UUID,
      actor: { type: 'system' },
      resourceType: 'test',
      action: 'broken',
      scope: 'nope' as 'team',
      status: 'info',
    });
    await s.app.wrenn.audit.drain();
    assert.ok(s.logs.lines.some((l) => l.includes('audit: failed to write entry') && l.includes('"action":"broken"')));
    assert.equal((await s.api.get('/v1/me', { token: u.token })).status, 200);
  });
});
