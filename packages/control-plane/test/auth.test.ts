// Signup, login, sessions, switch-team and the account routes, over HTTP against real PostgreSQL.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { SignJWT } from 'jose';
import { formatId, parseId } from '@wrenn/contracts';
import { SessionTokens } from '../src/auth/jwt.js';
import { JWT_SECRET, expectError, fingerprint, startTestServer, type Json, type TestServer } from './helpers.js';

function claims(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
}

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(async () => {
  await s?.close();
});

/** Runs `fn` and asserts that no table changed. */
async function unchanged(fn: () => Promise<void>, except: string[] = []): Promise<void> {
  await s.app.wrenn.audit.drain();
  const beforeFp = await fingerprint(s.database, { except });
  await fn();
  await s.app.wrenn.audit.drain();
  assert.deepEqual(await fingerprint(s.database, { except }), beforeFp, 'the database changed');
}

describe('signup', () => {
  test('creates an active user with a default team and returns a session at once', async () => {
    const res = await s.api.post('/v1/auth/signup', {
      body: { email: '  Alice@Example.COM ', password: 'correct horse battery', name: ' Alice ' },
    });
    assert.equal(res.status, 201, res.text);
    assert.deepEqual(Object.keys(res.body).sort(), ['email', 'name', 'team_id', 'token', 'user_id']);
    assert.equal(res.body.email, 'alice@example.com');
    assert.equal(res.body.name, 'Alice');
    assert.match(res.body.user_id, /^usr-[0-9a-z]{25}$/);
    assert.match(res.body.team_id, /^team-[0-9a-z]{25}$/);

    const c = claims(res.body.token);
    assert.equal(c.sub, res.body.user_id);
    assert.equal(c.team_id, res.body.team_id);
    assert.equal(c.role, 'owner');
    assert.equal((c.exp as number) - (c.iat as number), 6 * 3600);

    const db = s.database.db;
    const user = await db
      .selectFrom('users')
      .selectAll()
      .where('id', '=', parseId('user', res.body.user_id))
      .executeTakeFirstOrThrow();
    assert.equal(user.status, 'active');
    assert.equal(user.email, 'alice@example.com');
    assert.match(user.password_hash!, /^scrypt\$16384\$8\$1\$/);
    assert.ok(!user.password_hash!.includes('correct horse'));
    const teams = await db
      .selectFrom('users_teams as m')
      .innerJoin('teams as t', 't.id', 'm.team_id')
      .select(['t.name', 't.slug', 'm.role', 'm.is_default'])
      .where('m.user_id', '=', user.id)
      .execute();
    assert.equal(teams.length, 1);
    assert.equal(teams[0]!.name, "Alice's Team");
    assert.equal(teams[0]!.role, 'owner');
    assert.equal(teams[0]!.is_default, true);
    assert.match(teams[0]!.slug, /^[0-9a-f]{6}-[0-9a-f]{6}$/);

    const me = await s.api.get('/v1/me', { token: res.body.token });
    assert.equal(me.status, 200);
    assert.deepEqual(me.body, {
      id: res.body.user_id,
      name: 'Alice',
      email: 'alice@example.com',
      is_admin: true, // the first account of an installation is the platform admin
      has_password: true,
      providers: [],
    });
    const second = await s.api.signup('Second');
    assert.equal((await s.api.get('/v1/me', { token: second.token })).body.is_admin, false);
  });

  test('a duplicate email (any case) is 409 email_taken and changes nothing', async () => {
    const u = await s.api.signup('Dup');
    await unchanged(async () => {
      const res = await s.api.post('/v1/auth/signup', {
        body: { email: u.email.toUpperCase(), password: 'another-good-one', name: 'Dup2' },
      });
      expectError(res, 409, 'email_taken');
    });
  });

  test('concurrent signups with one email: exactly one succeeds', async () => {
    const body = { email: 'race@example.com', password: 'Racing-pass-11', name: 'Racer' };
    const results = await Promise.all([1, 2, 3, 4].map(() => s.api.post('/v1/auth/signup', { body })));
    assert.deepEqual(results.map((r) => r.status).sort(), [201, 409, 409, 409]);
    for (const r of results.filter((x) => x.status === 409)) expectError(r, 409, 'email_taken');
    const teams = await s.database.db
      .selectFrom('users as u')
      .innerJoin('users_teams as m', 'm.user_id', 'u.id')
      .select('m.team_id')
      .where('u.email', '=', 'race@example.com')
      .execute();
    assert.equal(teams.length, 1);
    // The losers' transactions left no team behind.
    const named = await s.database.db.selectFrom('teams').select('id').where('name', '=', "Racer's Team").execute();
    assert.equal(named.length, 1);
  });

  test('bad input is a precise 400 and changes nothing', async () => {
    const good = { email: 'new@example.com', password: 'a-fine-password', name: 'New' };
    const cases: [string, Record<string, unknown> | string, number, string, RegExp?][] = [
      ['not an email', { ...good, email: 'nope' }, 400, 'invalid_request', /email/],
      ['email without domain dot', { ...good, email: 'a@b' }, 400, 'invalid_request', /email/],
      ['short password', { ...good, password: 'Ab1!' }, 400, 'invalid_request', /password/],
      ['long password', { ...good, password: 'x1'.repeat(65) }, 400, 'invalid_request', /password/],
      ['all-same password', { ...good, password: 'aaaaaaaaaa' }, 400, 'weak_password'],
      ['password prefix', { ...good, password: 'Password123' }, 400, 'weak_password'],
      ['common password', { ...good, password: 'qwertyuiop' }, 400, 'weak_password'],
      ['sequence', { ...good, password: '123456789' }, 400, 'weak_password'],
      ['repeated chunk', { ...good, password: 'abcabcabc' }, 400, 'weak_password'],
      ['password = email', { ...good, password: 'new@example.com' }, 400, 'weak_password'],
      ['empty name', { ...good, name: '   ' }, 400, 'invalid_request', /name/],
      ['long name', { ...good, name: 'n'.repeat(101) }, 400, 'invalid_request', /name/],
      ['control char in name', { ...good, name: 'a\u0007b' }, 400, 'invalid_request', /name/],
      ['unknown field', { ...good, is_admin: true }, 400, 'invalid_request', /unknown property "is_admin"/],
      ['wrong type', { ...good, email: 42 }, 400, 'invalid_request', /body\.email must be string/],
      [
        'missing field',
        { email: good.email, password: good.password },
        400,
        'invalid_request',
        /body\.name is required/,
      ],
      ['malformed JSON', '{"email": "x@example.com",', 400, 'invalid_request', /not valid JSON/],
      ['JSON array', '[]', 400, 'invalid_request', /must be object/],
    ];
    await unchanged(async () => {
      for (const [label, body, status, code, msg] of cases) {
        const res =
          typeof body === 'string'
            ? await s.api.post('/v1/auth/signup', { raw: body })
            : await s.api.post('/v1/auth/signup', { body });
        expectError(res, status, code);
        if (msg) assert.match(res.body.error.message, msg, label);
      }
    });
  });

  test('an oversized body is 413 with the error shape', async () => {
    await unchanged(async () => {
      const res = await s.api.post('/v1/auth/signup', {
        raw: JSON.stringify({ email: 'big@example.com', password: 'x'.repeat(2 * 1024 * 1024), name: 'Big' }),
      });
      expectError(res, 413, 'payload_too_large');
    });
  });

  test('a non-JSON content type is rejected', async () => {
    const res = await s.api.post('/v1/auth/signup', {
      raw: '<xml/>',
      headers: { 'content-type': 'application/xml' },
    });
    expectError(res, 415, 'unsupported_media_type');
  });
});

describe('login', () => {
  test('returns a session for the default team', async () => {
    const u = await s.api.signup('Login');
    const res = await s.api.post('/v1/auth/login', {
      body: { email: ` ${u.email.toUpperCase()} `, password: u.password },
    });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.user_id, u.user_id);
    assert.equal(res.body.team_id, u.team_id);
    assert.equal(claims(res.body.token).role, 'owner');
  });

  test('wrong password and unknown email are the same 401', async () => {
    const u = await s.api.signup('Wrong');
    await unchanged(
      async () => {
        const a = await s.api.post('/v1/auth/login', { body: { email: u.email, password: u.password + 'x' } });
        const b = await s.api.post('/v1/auth/login', { body: { email: 'ghost@example.com', password: u.password } });
        expectError(a, 401, 'invalid_credentials');
        expectError(b, 401, 'invalid_credentials');
        assert.equal(a.body.error.message, b.body.error.message);
      },
      ['audit_logs'], // failed sign-ins are audited on purpose
    );
    await s.app.wrenn.audit.drain();
    const failed = await s.database.db
      .selectFrom('audit_logs')
      .select(['actor_type', 'resource_id', 'metadata', 'scope'])
      .where('action', '=', 'login_failed')
      .execute();
    assert.ok(failed.some((f) => f.resource_id === u.user_id && f.metadata.reason === 'wrong_password'));
    assert.ok(failed.some((f) => f.actor_type === 'system' && f.metadata.reason === 'unknown_email'));
    assert.ok(failed.every((f) => f.scope === 'admin' && !JSON.stringify(f.metadata).includes(u.password)));
  });

  test('a deactivated account is 403 after a correct password, 401 before', async () => {
    const u = await s.api.signup('Disabled');
    await s.database.db
      .updateTable('users')
      .set({ status: 'disabled' })
      .where('id', '=', parseId('user', u.user_id))
      .execute();
    expectError(await s.api.post('/v1/auth/login', { body: { email: u.email, password: 'wrong-password-1' } }), 401);
    expectError(
      await s.api.post('/v1/auth/login', { body: { email: u.email, password: u.password } }),
      403,
      'account_deactivated',
    );
    // Sessions issued before stop working too: every request re-loads the user.
    expectError(await s.api.get('/v1/me', { token: u.token }), 403, 'account_deactivated');
  });

  test('falls back to the first active team, and creates a default team when none is left', async () => {
    const owner = await s.api.signup('Fallback');
    const other = await s.api.post('/v1/teams', { token: owner.token, body: { name: 'Second team' } });
    assert.equal(other.status, 201);
    // Delete the default team: login lands on the other one.
    assert.equal((await s.api.delete(`/v1/teams/${owner.team_id}`, { token: owner.token })).status, 204);
    let res = await s.api.post('/v1/auth/login', { body: { email: owner.email, password: owner.password } });
    assert.equal(res.body.team_id, other.body.id);
    // Delete that too: login makes a new default team.
    assert.equal((await s.api.delete(`/v1/teams/${other.body.id}`, { token: res.body.token })).status, 204);
    res = await s.api.post('/v1/auth/login', { body: { email: owner.email, password: owner.password } });
    assert.equal(res.status, 200);
    assert.notEqual(res.body.team_id, owner.team_id);
    assert.notEqual(res.body.team_id, other.body.id);
    const teams = await s.api.get('/v1/teams', { token: res.body.token });
    assert.deepEqual(
      teams.body.map((t: { id: string; role: string; name: string }) => [t.id, t.role, t.name]),
      [[res.body.team_id, 'owner', "Fallback's Team"]],
    );
  });
});

describe('sessions', () => {
  test('expired, forged, tampered and malformed tokens are 401', async () => {
    const u = await s.api.signup('Tokens');
    const userId = parseId('user', u.user_id);
    const teamId = parseId('team', u.team_id);
    const base = { userId, teamId, role: 'owner' as const, email: u.email, name: u.name, isAdmin: false };
    const expired = await new SessionTokens(JWT_SECRET, -60).sign(base);
    const forged = await new SessionTokens('another-secret-that-is-long-enough!!').sign(base);
    const [h, p, sig] = u.token.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    const tampered = [h, Buffer.from(JSON.stringify({ ...payload, is_admin: true })).toString('base64url'), sig].join(
      '.',
    );
    const none = [Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url'), p, ''].join('.');
    const key = new TextEncoder().encode(JWT_SECRET);
    const noTyp = await new SignJWT({ team_id: u.team_id, role: 'owner' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(u.user_id)
      .setExpirationTime('1h')
      .sign(key);
    const hostTyp = await new SignJWT({ typ: 'host', team_id: u.team_id, role: 'owner' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(u.user_id)
      .setExpirationTime('1h')
      .sign(key);

    await unchanged(async () => {
      for (const t of [expired, forged, tampered, none, noTyp, hostTyp, 'garbage', 'a.b.c']) {
        const code = t === expired ? 'token_expired' : 'invalid_token';
        expectError(await s.api.get('/v1/me', { token: t }), 401, code);
        // Nothing is written with a bad token either.
        expectError(await s.api.post('/v1/api-keys', { token: t, body: { name: 'x' } }), 401, code);
        expectError(await s.api.post('/v1/teams', { token: t, body: { name: 'x' } }), 401, code);
        expectError(await s.api.patch('/v1/me', { token: t, body: { name: 'x' } }), 401, code);
      }
    });
    expectError(await s.api.get('/v1/me'), 401, 'unauthorized');
    expectError(await s.api.get('/v1/me', { headers: { authorization: `Basic ${u.token}` } }), 401, 'unauthorized');
    assert.equal((await s.api.get('/v1/me', { token: u.token })).status, 200);
  });

  test('a session of a deleted user is 401', async () => {
    const u = await s.api.signup('Gone');
    await s.database.db
      .updateTable('users')
      .set({ status: 'deleted' })
      .where('id', '=', parseId('user', u.user_id))
      .execute();
    expectError(await s.api.get('/v1/me', { token: u.token }), 401);
  });
});

describe('switch-team', () => {
  test('re-issues the session for a team the user belongs to; anything else is 404', async () => {
    const a = await s.api.signup('Switcher');
    const b = await s.api.signup('Stranger');
    const t2 = await s.api.post('/v1/teams', { token: a.token, body: { name: 'Other' } });
    const ok = await s.api.post('/v1/auth/switch-team', { token: a.token, body: { team_id: t2.body.id } });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body.team_id, t2.body.id);
    assert.equal(claims(ok.body.token).team_id, t2.body.id);

    await unchanged(async () => {
      // Someone else's team and a team that does not exist look the same.
      expectError(
        await s.api.post('/v1/auth/switch-team', { token: a.token, body: { team_id: b.team_id } }),
        404,
        'team_not_found',
      );
      const ghost = formatId('team', '11111111-2222-4333-8444-555555555555');
      expectError(
        await s.api.post('/v1/auth/switch-team', { token: a.token, body: { team_id: ghost } }),
        404,
        'team_not_found',
      );
      const bad = await s.api.post('/v1/auth/switch-team', { token: a.token, body: { team_id: 'team-xyz' } });
      expectError(bad, 400, 'invalid_request');
      assert.match(bad.body.error.message, /team_id/);
      expectError(await s.api.post('/v1/auth/switch-team', { body: { team_id: t2.body.id } }), 401);
    }, ['audit_logs']);
    // A deleted team is gone.
    await s.api.delete(`/v1/teams/${t2.body.id}`, { token: a.token });
    expectError(await s.api.post('/v1/auth/switch-team', { token: a.token, body: { team_id: t2.body.id } }), 404);
  });
});

describe('me', () => {
  test('PATCH /v1/me renames and re-issues the session', async () => {
    const u = await s.api.signup('Renamer');
    const res = await s.api.patch('/v1/me', { token: u.token, body: { name: '  Renamed Person ' } });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.name, 'Renamed Person');
    assert.equal(claims(res.body.token).name, 'Renamed Person');
    assert.equal(res.body.team_id, u.team_id);
    assert.equal((await s.api.get('/v1/me', { token: res.body.token })).body.name, 'Renamed Person');
    await unchanged(async () => {
      expectError(await s.api.patch('/v1/me', { token: u.token, body: { name: '' } }), 400);
      expectError(await s.api.patch('/v1/me', { token: u.token, body: { name: 'x', email: 'a@b.co' } }), 400);
      expectError(await s.api.patch('/v1/me', { token: u.token, body: { name: ' \t ' } }), 400);
    });
  });

  test('password change: wrong current is 401 wrong_password, weak is 400, then the new one works', async () => {
    const u = await s.api.signup('Pw');
    await unchanged(async () => {
      const wrong = await s.api.post('/v1/me/password', {
        token: u.token,
        body: { current_password: 'not-it-at-all', new_password: 'Brand-new-pass-1' },
      });
      expectError(wrong, 401, 'wrong_password');
      expectError(
        await s.api.post('/v1/me/password', { token: u.token, body: { new_password: 'Brand-new-pass-1' } }),
        400,
      );
      expectError(
        await s.api.post('/v1/me/password', {
          token: u.token,
          body: { current_password: u.password, new_password: 'aaaaaaaaa' },
        }),
        400,
        'weak_password',
      );
      expectError(
        await s.api.post('/v1/me/password', {
          token: u.token,
          body: { current_password: u.password, new_password: 'short' },
        }),
        400,
      );
    });
    const ok = await s.api.post('/v1/me/password', {
      token: u.token,
      body: { current_password: u.password, new_password: 'Brand-new-pass-1' },
    });
    assert.equal(ok.status, 204, ok.text);
    assert.equal(ok.text, '');
    expectError(await s.api.post('/v1/auth/login', { body: { email: u.email, password: u.password } }), 401);
    assert.equal(
      (await s.api.post('/v1/auth/login', { body: { email: u.email, password: 'Brand-new-pass-1' } })).status,
      200,
    );
  });

  test('an OAuth-only account adds a password with new_password + confirm_password', async () => {
    const u = await s.api.signup('OAuthOnly');
    const id = parseId('user', u.user_id);
    await s.database.db.updateTable('users').set({ password_hash: null }).where('id', '=', id).execute();
    await s.database.db
      .insertInto('oauth_providers')
      .values({ provider: 'github', provider_id: '4242', user_id: id })
      .execute();
    const me = await s.api.get('/v1/me', { token: u.token });
    assert.equal(me.body.has_password, false);
    assert.deepEqual(me.body.providers, ['github']);
    // No password yet: password login is refused like an unknown account.
    expectError(await s.api.post('/v1/auth/login', { body: { email: u.email, password: u.password } }), 401);
    await unchanged(async () => {
      expectError(
        await s.api.post('/v1/me/password', {
          token: u.token,
          body: { new_password: 'Fresh-pass-99', confirm_password: 'Fresh-pass-98' },
        }),
        400,
        'password_mismatch',
      );
      expectError(
        await s.api.post('/v1/me/password', { token: u.token, body: { new_password: 'Fresh-pass-99' } }),
        400,
      );
    });
    const ok = await s.api.post('/v1/me/password', {
      token: u.token,
      body: { new_password: 'Fresh-pass-99', confirm_password: 'Fresh-pass-99' },
    });
    assert.equal(ok.status, 204);
    assert.equal((await s.api.get('/v1/me', { token: u.token })).body.has_password, true);
    assert.equal(
      (await s.api.post('/v1/auth/login', { body: { email: u.email, password: 'Fresh-pass-99' } })).status,
      200,
    );
  });
});

/** Sends raw bytes on a fresh connection and returns everything the server answered. */
async function rawHttp(base: string, bytes: string): Promise<string> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(url.port), url.hostname, () => sock.write(bytes));
    let out = '';
    sock.on('data', (d) => (out += d.toString()));
    sock.on('close', () => resolve(out));
    sock.on('error', reject);
  });
}

function rawJson(response: string): { status: number; body: Json } {
  const [head, body] = response.split('\r\n\r\n', 2) as [string, string];
  return { status: Number(head.split(' ')[1]), body: JSON.parse(body) };
}

describe('errors', () => {
  test('malformed URLs and malformed HTTP get the error shape too', async () => {
    const badUrl = await s.api.get('/v1/teams/%E0%A4%A');
    expectError(badUrl, 400, 'invalid_request');
    const garbage = rawJson(await rawHttp(s.url, 'NOT HTTP AT ALL\r\n\r\n'));
    assert.equal(garbage.status, 400);
    assert.equal(garbage.body.error.code, 'invalid_request');
    const huge = rawJson(
      await rawHttp(s.url, `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`),
    );
    assert.equal(huge.status, 431);
    assert.equal(huge.body.error.code, 'headers_too_large');
  });

  test('unknown routes and methods are 404 with the error shape', async () => {
    expectError(await s.api.get('/v1/nothing-here'), 404, 'not_found');
    expectError(await s.api.req('PUT', '/v1/me'), 404, 'not_found');
    const health = await s.api.get('/health');
    assert.deepEqual(health.body, { status: 'ok', version: '0.0.0-test' });
  });
});
