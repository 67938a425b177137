// Secrets never reach a log line or a response: a full server run at trace level
// exercises every flow, then all its output is searched for every secret involved.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { FakeGitHub, githubUser } from './fake-github.js';
import { Api, REDIS_URL, createTestDatabase, freePort, spawnControlPlane } from './helpers.js';

const JWT = 'log-test-jwt-secret-' + 'k3y'.repeat(8);
let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
let dir: string;
const gh = new FakeGitHub();

before(async () => {
  tdb = await createTestDatabase();
  dir = mkdtempSync(path.join(tmpdir(), 'wrenn-cp-secrets-'));
  await gh.start();
});
after(async () => {
  await gh.stop();
  await tdb?.drop();
  rmSync(dir, { recursive: true, force: true });
});

describe('secrets', () => {
  test('no password, hash, key, token or secret appears in any log line or response', async () => {
    const port = await freePort();
    const publicUrl = `http://127.0.0.1:${port}`;
    const cp = await spawnControlPlane(
      {
        DATABASE_URL: tdb.url,
        REDIS_URL,
        WRENN_DATA_DIR: dir,
        JWT_SECRET: JWT,
        LOG_LEVEL: 'trace',
        WRENN_PUBLIC_URL: publicUrl,
        OAUTH_REDIRECT_URL: 'http://dashboard.example.test',
        ...gh.env(),
      },
      port,
    );
    const api = new Api(cp.url);
    const secrets: string[] = [JWT, gh.clientSecret];
    const responses: string[] = [];
    const keep = <T extends { text: string }>(r: T): T => {
      responses.push(r.text);
      return r;
    };

    // Accounts and sessions.
    const a = await api.signup('Secret Keeper');
    const b = await api.signup('Other Person');
    secrets.push(a.password, b.password, a.token, b.token);
    const login = keep(await api.post('/v1/auth/login', { body: { email: a.email, password: a.password } }));
    secrets.push(login.body.token);
    const wrongPw = 'Wrong-guess-' + Date.now();
    secrets.push(wrongPw);
    keep(await api.post('/v1/auth/login', { body: { email: a.email, password: wrongPw } }));
    keep(await api.post('/v1/auth/login', { body: { email: 'nobody@example.com', password: wrongPw } }));
    keep(await api.get('/v1/me', { token: a.token }));
    const renamed = keep(await api.patch('/v1/me', { token: a.token, body: { name: 'Keeper' } }));
    secrets.push(renamed.body.token);
    const newPw = 'Rotated-pass-' + Date.now();
    secrets.push(newPw);
    keep(
      await api.post('/v1/me/password', { token: a.token, body: { current_password: wrongPw, new_password: newPw } }),
    );
    keep(
      await api.post('/v1/me/password', {
        token: a.token,
        body: { current_password: a.password, new_password: newPw },
      }),
    );
    // A password inside malformed JSON and inside a rejected body.
    const inBadJson = 'In-bad-json-' + Date.now();
    secrets.push(inBadJson);
    keep(await api.post('/v1/auth/login', { raw: `{"email":"x@example.com","password":"${inBadJson}"` }));
    keep(
      await api.post('/v1/auth/signup', { body: { email: 'y@example.com', password: inBadJson, name: 'Y', extra: 1 } }),
    );

    // API keys: create, use, list, revoke, use revoked, bad keys.
    const k = keep(await api.post('/v1/api-keys', { token: a.token, body: { name: 'logged?' } })).body;
    secrets.push(k.key);
    keep(await api.get('/v1/api-keys/current', { key: k.key }));
    keep(await api.get('/v1/api-keys', { token: a.token }));
    keep(await api.delete(`/v1/api-keys/${k.id}`, { token: a.token }));
    keep(await api.get('/v1/api-keys/current', { key: k.key }));
    keep(await api.get(`/v1/api-keys/current?key=${k.key}`, { key: k.key }));

    // Teams, members, audit.
    const team = keep(await api.post('/v1/teams', { token: a.token, body: { name: 'Secret team' } })).body;
    keep(await api.post(`/v1/teams/${team.id}/members`, { token: a.token, body: { email: b.email } }));
    keep(await api.post('/v1/auth/switch-team', { token: b.token, body: { team_id: team.id } }));
    keep(await api.get('/v1/audit-logs', { token: a.token }));
    keep(await api.get('/v1/me', { token: a.token.slice(0, -3) + 'abc' }));

    // OAuth signup through the fake GitHub, with the code and state in the callback URL.
    gh.nextUser = githubUser('logcat', 'logcat@example.com');
    const start = await fetch(`${cp.url}/auth/oauth/github?intent=signup`, { redirect: 'manual' });
    const stateCookie = start.headers.getSetCookie()[0]!.split(';')[0]!;
    secrets.push(decodeURIComponent(stateCookie.split('=')[1]!));
    const atGh = await fetch(start.headers.get('location')!, { redirect: 'manual' });
    const back = await fetch(atGh.headers.get('location')!, { redirect: 'manual', headers: { cookie: stateCookie } });
    assert.equal(back.status, 302);
    const tokenCookie = back.headers.getSetCookie().find((c) => c.startsWith('wrenn_oauth_token='))!;
    secrets.push(tokenCookie.split(';')[0]!.split('=')[1]!);
    secrets.push(...gh.issued);

    // Stored hashes, read before the server stops.
    const c = new pg.Client({ connectionString: tdb.url });
    await c.connect();
    try {
      for (const r of (await c.query('SELECT password_hash FROM users WHERE password_hash IS NOT NULL')).rows) {
        secrets.push(r.password_hash, r.password_hash.split('$').pop());
      }
      const keyHashes = (await c.query('SELECT key_hash FROM team_api_keys')).rows.map((r) => r.key_hash as string);
      secrets.push(...keyHashes);
    } finally {
      await c.end();
    }
    secrets.push((await import('node:crypto')).createHash('sha256').update(k.key).digest('hex'));

    cp.proc.kill('SIGTERM');
    const { code } = await cp.exited;
    assert.equal(code, 0, cp.stderr());
    const output = cp.stdout() + cp.stderr();
    const lines = output.split('\n').filter((l) => l !== '');
    assert.ok(lines.length > 30, `expected a busy log, got ${lines.length} lines`);
    assert.ok(output.includes('"authorization":"[redacted]"'), 'authorization headers are logged, redacted');
    assert.ok(output.includes('"x-api-key":"[redacted]"'));
    assert.ok(output.includes('"cookie":"[redacted]"'));
    assert.ok(output.includes('code=[redacted]') && output.includes('state=[redacted]'));

    for (const secret of secrets) {
      assert.ok(secret && secret.length >= 8, 'a real secret');
      const hit = lines.find((l) => l.includes(secret));
      assert.equal(hit, undefined, `secret ${secret.slice(0, 6)}… found in log line: ${hit?.slice(0, 200)}`);
    }
    // Responses carry only what they are meant to: the key once, tokens only in auth responses.
    const hashes = secrets.filter((x) => /^(scrypt\$|[0-9a-f]{64}$)/.test(x));
    for (const r of responses) {
      for (const h of hashes) assert.ok(!r.includes(h), 'a hash leaked into a response');
      assert.ok(!r.includes(JWT) && !r.includes(gh.clientSecret));
      for (const pw of [a.password, b.password, wrongPw, newPw, inBadJson]) assert.ok(!r.includes(pw));
    }
    assert.equal(responses.filter((r) => r.includes(k.key)).length, 1, 'the plaintext key is shown exactly once');
  });
});
