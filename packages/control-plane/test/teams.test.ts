// Teams, members, roles and user search over HTTP against real PostgreSQL.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { formatId, parseId } from '@wrenn/contracts';
import { expectError, fingerprint, startTestServer, type TestServer } from './helpers.js';

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(async () => {
  await s?.close();
});

async function unchanged(fn: () => Promise<void>): Promise<void> {
  await s.app.wrenn.audit.drain();
  const fp = await fingerprint(s.database);
  await fn();
  await s.app.wrenn.audit.drain();
  assert.deepEqual(await fingerprint(s.database), fp, 'the database changed');
}

/** An owner with a fresh team, an admin and a member in it, and an outsider. */
async function crew() {
  const owner = await s.api.signup('Owner');
  const admin = await s.api.signup('Admin');
  const member = await s.api.signup('Member');
  const outsider = await s.api.signup('Outsider');
  const team = (await s.api.post('/v1/teams', { token: owner.token, body: { name: 'Crew' } })).body;
  for (const u of [admin, member]) {
    const r = await s.api.post(`/v1/teams/${team.id}/members`, { token: owner.token, body: { email: u.email } });
    assert.equal(r.status, 201, r.text);
  }
  assert.equal(
    (
      await s.api.patch(`/v1/teams/${team.id}/members/${admin.user_id}`, {
        token: owner.token,
        body: { role: 'admin' },
      })
    ).status,
    204,
  );
  return { owner, admin, member, outsider, team };
}

describe('teams', () => {
  test('create, list, get, rename', async () => {
    const u = await s.api.signup('Teamer');
    const created = await s.api.post('/v1/teams', { token: u.token, body: { name: " Dev_Ops-@'s 2 " } });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.body.name, "Dev_Ops-@'s 2");
    assert.equal(created.body.role, 'owner');
    assert.equal(created.body.is_byoc, false);
    assert.match(created.body.slug, /^[0-9a-f]{6}-[0-9a-f]{6}$/);

    const list = await s.api.get('/v1/teams', { token: u.token });
    assert.deepEqual(
      list.body.map((t: { id: string; role: string }) => [t.id, t.role]),
      [
        [u.team_id, 'owner'],
        [created.body.id, 'owner'],
      ],
    );
    // The new team is not the default: login still lands on the signup team.
    const login = await s.api.post('/v1/auth/login', { body: { email: u.email, password: u.password } });
    assert.equal(login.body.team_id, u.team_id);

    const got = await s.api.get(`/v1/teams/${created.body.id}`, { token: u.token });
    assert.equal(got.status, 200);
    assert.deepEqual(got.body.team, {
      id: created.body.id,
      name: created.body.name,
      slug: created.body.slug,
      is_byoc: false,
      created_at: created.body.created_at,
    });
    assert.deepEqual(
      got.body.members.map((m: { user_id: string; role: string; email: string }) => [m.user_id, m.role, m.email]),
      [[u.user_id, 'owner', u.email]],
    );

    assert.equal(
      (await s.api.patch(`/v1/teams/${created.body.id}`, { token: u.token, body: { name: 'Renamed' } })).status,
      204,
    );
    const again = await s.api.get(`/v1/teams/${created.body.id}`, { token: u.token });
    assert.equal(again.body.team.name, 'Renamed');
    assert.equal(again.body.team.slug, created.body.slug, 'the slug never changes');
  });

  test('invalid team names and ids are 400 and change nothing', async () => {
    const u = await s.api.signup('BadNames');
    await unchanged(async () => {
      for (const name of ['', '   ', 'semi;colon', 'x'.repeat(129), 'new\nline', 'émoji 🎉']) {
        expectError(await s.api.post('/v1/teams', { token: u.token, body: { name } }), 400, 'invalid_request');
        expectError(
          await s.api.patch(`/v1/teams/${u.team_id}`, { token: u.token, body: { name } }),
          400,
          'invalid_request',
        );
      }
      expectError(await s.api.post('/v1/teams', { token: u.token, body: { name: 'ok', slug: 'mine' } }), 400);
      expectError(await s.api.post('/v1/teams', { token: u.token, body: { name: 7 } }), 400);
      for (const id of ['nope', 'team-', 'usr-' + '0'.repeat(25), 'team-' + 'z'.repeat(25), 'team-' + 'A'.repeat(25)]) {
        const r = await s.api.get(`/v1/teams/${encodeURIComponent(id)}`, { token: u.token });
        expectError(r, 400, 'invalid_request');
        assert.match(r.body.error.message, /\bid\b/);
      }
      const badUid = await s.api.delete(`/v1/teams/${u.team_id}/members/usr-bad`, { token: u.token });
      expectError(badUid, 400, 'invalid_request');
      assert.match(badUid.body.error.message, /uid/);
    });
  });

  test("someone else's team is 404 on every route, exactly like a team that does not exist", async () => {
    const { team, outsider } = await crew();
    const ghost = formatId('team', '00000000-1111-4222-8333-444444444444');
    await unchanged(async () => {
      for (const id of [team.id, ghost, formatId('team', '00000000-0000-0000-0000-000000000000')]) {
        const t = outsider.token;
        const calls = [
          s.api.get(`/v1/teams/${id}`, { token: t }),
          s.api.patch(`/v1/teams/${id}`, { token: t, body: { name: 'Mine now' } }),
          s.api.delete(`/v1/teams/${id}`, { token: t }),
          s.api.get(`/v1/teams/${id}/members`, { token: t }),
          s.api.post(`/v1/teams/${id}/members`, { token: t, body: { email: outsider.email } }),
          s.api.patch(`/v1/teams/${id}/members/${outsider.user_id}`, { token: t, body: { role: 'admin' } }),
          s.api.delete(`/v1/teams/${id}/members/${outsider.user_id}`, { token: t }),
          s.api.post(`/v1/teams/${id}/leave`, { token: t }),
        ];
        for (const r of await Promise.all(calls)) {
          expectError(r, 404, 'team_not_found');
          assert.equal(r.body.error.message, 'team not found');
        }
      }
    });
  });

  test('role rules: members cannot manage, admins cannot delete, the owner is protected', async () => {
    const { owner, admin, member, team } = await crew();
    const base = `/v1/teams/${team.id}`;
    await unchanged(async () => {
      // A member can read but not manage.
      assert.equal((await s.api.get(base, { token: member.token })).status, 200);
      expectError(await s.api.patch(base, { token: member.token, body: { name: 'X' } }), 403, 'forbidden');
      expectError(await s.api.post(`${base}/members`, { token: member.token, body: { email: owner.email } }), 403);
      expectError(
        await s.api.patch(`${base}/members/${admin.user_id}`, { token: member.token, body: { role: 'member' } }),
        403,
      );
      expectError(await s.api.delete(`${base}/members/${admin.user_id}`, { token: member.token }), 403);
      expectError(await s.api.delete(base, { token: member.token }), 403);
      // An admin manages members but cannot delete the team or touch the owner.
      expectError(await s.api.delete(base, { token: admin.token }), 403);
      expectError(
        await s.api.patch(`${base}/members/${owner.user_id}`, { token: admin.token, body: { role: 'member' } }),
        403,
        'owner_protected',
      );
      expectError(
        await s.api.delete(`${base}/members/${owner.user_id}`, { token: admin.token }),
        403,
        'owner_protected',
      );
      // Nobody can be made owner through the role route.
      expectError(
        await s.api.patch(`${base}/members/${member.user_id}`, { token: owner.token, body: { role: 'owner' } }),
        400,
      );
      // The owner cannot leave, nor demote or remove themselves.
      expectError(await s.api.post(`${base}/leave`, { token: owner.token }), 403, 'owner_cannot_leave');
      expectError(
        await s.api.patch(`${base}/members/${owner.user_id}`, { token: owner.token, body: { role: 'admin' } }),
        403,
      );
      expectError(await s.api.delete(`${base}/members/${owner.user_id}`, { token: owner.token }), 403);
      // Adding: unknown email 404, existing member 409, bad email 400.
      expectError(
        await s.api.post(`${base}/members`, { token: admin.token, body: { email: 'nobody@example.com' } }),
        404,
        'user_not_found',
      );
      expectError(
        await s.api.post(`${base}/members`, { token: admin.token, body: { email: member.email.toUpperCase() } }),
        409,
        'already_member',
      );
      expectError(await s.api.post(`${base}/members`, { token: admin.token, body: { email: 'not-an-email' } }), 400);
      // Not a member of this team: 404.
      const ghostUser = formatId('user', '00000000-1111-4222-8333-444444444444');
      expectError(await s.api.delete(`${base}/members/${ghostUser}`, { token: admin.token }), 404, 'member_not_found');
    });

    // Allowed changes, each visible afterwards.
    assert.equal((await s.api.patch(base, { token: admin.token, body: { name: 'Crew Renamed' } })).status, 204);
    assert.equal(
      (await s.api.patch(`${base}/members/${member.user_id}`, { token: admin.token, body: { role: 'admin' } })).status,
      204,
    );
    let members = (await s.api.get(`${base}/members`, { token: member.token })).body;
    assert.deepEqual(
      members.map((m: { user_id: string; role: string }) => [m.user_id, m.role]),
      [
        [owner.user_id, 'owner'],
        [admin.user_id, 'admin'],
        [member.user_id, 'admin'],
      ],
    );
    assert.equal((await s.api.delete(`${base}/members/${admin.user_id}`, { token: member.token })).status, 204);
    assert.equal((await s.api.post(`${base}/leave`, { token: member.token })).status, 204);
    members = (await s.api.get(`${base}/members`, { token: owner.token })).body;
    assert.deepEqual(
      members.map((m: { user_id: string }) => m.user_id),
      [owner.user_id],
    );
    // Those who left now get 404.
    expectError(await s.api.get(base, { token: member.token }), 404);
    expectError(await s.api.get(base, { token: admin.token }), 404);
  });

  test('delete: owner only, soft, slug reserved, the team vanishes for everyone', async () => {
    const { owner, member, team } = await crew();
    assert.equal((await s.api.delete(`/v1/teams/${team.id}`, { token: owner.token })).status, 204);
    const row = await s.database.db
      .selectFrom('teams')
      .selectAll()
      .where('id', '=', parseId('team', team.id))
      .executeTakeFirstOrThrow();
    assert.ok(row.deleted_at instanceof Date);
    assert.equal(row.slug, team.slug);
    for (const u of [owner, member]) {
      expectError(await s.api.get(`/v1/teams/${team.id}`, { token: u.token }), 404);
      const list = (await s.api.get('/v1/teams', { token: u.token })).body;
      assert.ok(!list.some((t: { id: string }) => t.id === team.id));
    }
    expectError(await s.api.delete(`/v1/teams/${team.id}`, { token: owner.token }), 404);
    // The slug stays taken: inserting it again violates the unique constraint.
    await assert.rejects(
      s.database.db.insertInto('teams').values({ name: 'Squatter', slug: team.slug }).execute(),
      /teams_slug_key/,
    );
  });
});

describe('users search', () => {
  test('prefix match, at most 10, LIKE metacharacters are literal', async () => {
    const tag = Math.random().toString(36).slice(2, 8);
    const u = await s.api.signup('Searcher', `searcher-${tag}@example.com`);
    for (let i = 0; i < 12; i++) await s.api.signup('Many', `many${tag}-${String(i).padStart(2, '0')}@example.com`);
    await s.api.signup('Pct', `pct${tag}%x@example.com`);
    await s.api.signup('Under', `und${tag}_y@example.com`);
    await s.api.signup('Underx', `und${tag}zy@example.com`);

    const many = await s.api.get(`/v1/users/search?email=MANY${tag}`, { token: u.token });
    assert.equal(many.status, 200);
    assert.equal(many.body.length, 10);
    assert.deepEqual(Object.keys(many.body[0]).sort(), ['email', 'user_id']);
    assert.equal(many.body[0].email, `many${tag}-00@example.com`);

    // "%" and "_" match only themselves.
    const pct = await s.api.get(`/v1/users/search?email=${encodeURIComponent(`pct${tag}%`)}`, { token: u.token });
    assert.deepEqual(
      pct.body.map((r: { email: string }) => r.email),
      [`pct${tag}%x@example.com`],
    );
    const under = await s.api.get(`/v1/users/search?email=${encodeURIComponent(`und${tag}_`)}`, { token: u.token });
    assert.deepEqual(
      under.body.map((r: { email: string }) => r.email),
      [`und${tag}_y@example.com`],
    );
    const wild = await s.api.get(`/v1/users/search?email=${encodeURIComponent('%%%')}`, { token: u.token });
    assert.deepEqual(wild.body, []);
    const backslash = await s.api.get(`/v1/users/search?email=${encodeURIComponent('\\\\%')}`, { token: u.token });
    assert.deepEqual(backslash.body, []);

    expectError(await s.api.get('/v1/users/search?email=ab', { token: u.token }), 400);
    expectError(await s.api.get('/v1/users/search', { token: u.token }), 400);
    expectError(await s.api.get('/v1/users/search?email=abc&x=1', { token: u.token }), 400);
    expectError(await s.api.get('/v1/users/search?email=abc'), 401);
  });
});
