// GitHub OAuth sign-in and sign-up, end to end against a local fake GitHub.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseId } from '@wrenn/contracts';
import { GitHubProvider } from '../src/auth/oauth/github.js';
import { OAuthRegistry } from '../src/auth/oauth/provider.js';
import { OAuthStateSigner } from '../src/auth/oauth/state.js';
import { FakeGitHub, githubUser, type FakeGitHubUser } from './fake-github.js';
import { JWT_SECRET, expectError, fingerprint, startTestServer, type TestServer } from './helpers.js';

const DASHBOARD = 'http://dashboard.example.test';
const gh = new FakeGitHub();
const registry = new OAuthRegistry();
let s: TestServer;

before(async () => {
  await gh.start();
  s = await startTestServer({ deps: { oauthProviders: registry, oauthRedirectUrl: DASHBOARD } });
  // The callback URL needs the port the server got.
  registry.register(new GitHubProvider(gh.config(), `${s.url}/auth/oauth/github/callback`));
});
after(async () => {
  await s?.close();
  await gh.stop();
});

function cookiesOf(res: Response): Map<string, { value: string; attrs: string }> {
  const out = new Map<string, { value: string; attrs: string }>();
  for (const c of res.headers.getSetCookie()) {
    const [pair, ...attrs] = c.split(';');
    const i = pair!.indexOf('=');
    out.set(pair!.slice(0, i).trim(), { value: decodeURIComponent(pair!.slice(i + 1)), attrs: attrs.join(';').trim() });
  }
  return out;
}

interface FlowResult {
  location: string;
  cookies: Map<string, { value: string; attrs: string }>;
}

/** Browser-like: start, visit the (fake) provider, come back to the callback with the state cookie. */
async function flow(
  intent: string,
  user: FakeGitHubUser | undefined,
  tweak: { cookie?: (c: string) => string | undefined; callback?: (u: URL) => void } = {},
): Promise<FlowResult> {
  gh.nextUser = user;
  const start = await fetch(`${s.url}/auth/oauth/github?intent=${intent}`, { redirect: 'manual' });
  assert.equal(start.status, 302);
  const state = cookiesOf(start).get('oauth_state');
  assert.ok(state);
  assert.match(state.attrs, /HttpOnly/i);
  assert.match(state.attrs, /SameSite=Lax/i);
  assert.match(state.attrs, /Max-Age=600/i);
  const authorize = new URL(start.headers.get('location')!);
  assert.equal(authorize.origin + authorize.pathname, `${gh.base}/login/oauth/authorize`);
  assert.equal(authorize.searchParams.get('redirect_uri'), `${s.url}/auth/oauth/github/callback`);
  assert.equal(authorize.searchParams.get('scope'), 'user:email');

  const atProvider = await fetch(authorize, { redirect: 'manual' });
  const callback = new URL(atProvider.headers.get('location')!);
  tweak.callback?.(callback);
  const cookie = tweak.cookie ? tweak.cookie(state.value) : state.value;
  const back = await fetch(callback, {
    redirect: 'manual',
    headers: cookie === undefined ? {} : { cookie: `oauth_state=${encodeURIComponent(cookie)}` },
  });
  assert.equal(back.status, 302, await back.text());
  return { location: back.headers.get('location')!, cookies: cookiesOf(back) };
}

const CALLBACK = `${DASHBOARD}/auth/github/callback`;

async function unchanged(fn: () => Promise<void>): Promise<void> {
  await s.app.wrenn.audit.drain();
  const fp = await fingerprint(s.database, { except: ['audit_logs'] });
  await fn();
  assert.deepEqual(await fingerprint(s.database, { except: ['audit_logs'] }), fp);
}

describe('GitHub OAuth', () => {
  test('signup creates the user, team and link in one go; login finds them again', async () => {
    const octo = githubUser('octocat', 'Octo.Cat@Example.com');
    const res = await flow('signup', octo);
    assert.equal(res.location, CALLBACK);
    const token = res.cookies.get('wrenn_oauth_token')!;
    assert.ok(token.value.split('.').length === 3);
    assert.match(token.attrs, /Path=\/auth\//);
    assert.match(token.attrs, /Max-Age=60/);
    assert.doesNotMatch(token.attrs, /HttpOnly/i);
    assert.equal(res.cookies.get('wrenn_oauth_email')!.value, 'octo.cat@example.com');
    assert.equal(res.cookies.get('wrenn_oauth_name')!.value, 'Octocat');
    assert.equal(res.cookies.get('wrenn_oauth_new_signup')!.value, '1');
    assert.equal(res.cookies.get('oauth_state')!.value, '', 'the state cookie is cleared');
    assert.equal(gh.exchanges.at(-1)!.client_secret, gh.clientSecret);

    const me = await s.api.get('/v1/me', { token: token.value });
    assert.equal(me.status, 200, me.text);
    assert.equal(me.body.id, res.cookies.get('wrenn_oauth_user_id')!.value);
    assert.equal(me.body.has_password, false);
    assert.deepEqual(me.body.providers, ['github']);
    const userId = parseId('user', me.body.id);
    const link = await s.database.db.selectFrom('oauth_providers').selectAll().where('user_id', '=', userId).execute();
    assert.deepEqual(
      link.map((l) => [l.provider, l.provider_id, l.email]),
      [['github', String(octo.id), 'octo.cat@example.com']],
    );
    const teams = await s.api.get('/v1/teams', { token: token.value });
    assert.deepEqual(
      teams.body.map((t: { id: string; name: string; role: string }) => [t.id, t.name, t.role]),
      [[res.cookies.get('wrenn_oauth_team_id')!.value, "Octocat's Team", 'owner']],
    );

    // Later: sign in (either intent) as the same GitHub account.
    const again = await flow('login', octo);
    assert.equal(again.location, CALLBACK);
    assert.equal(again.cookies.get('wrenn_oauth_user_id')!.value, me.body.id);
    assert.equal(again.cookies.has('wrenn_oauth_new_signup'), false);
    assert.equal((await flow('signup', octo)).cookies.get('wrenn_oauth_user_id')!.value, me.body.id);
    await s.app.wrenn.audit.drain();
    const events = await s.database.db
      .selectFrom('audit_logs')
      .select(['action', 'metadata'])
      .where('actor_id', '=', me.body.id)
      .orderBy('created_at')
      .execute();
    assert.deepEqual(
      events.map((e) => `${e.action}:${e.metadata.method}`),
      ['signup:github', 'login:github', 'login:github'],
    );
  });

  test('two callbacks racing to sign up the same GitHub account end in one account', async () => {
    const twin = githubUser('twin', 'twin@example.com');
    const results = await Promise.all([flow('signup', twin), flow('signup', twin), flow('signup', twin)]);
    const ids = results.map((r) => r.cookies.get('wrenn_oauth_user_id')?.value);
    assert.ok(ids[0], JSON.stringify(results.map((r) => r.location)));
    assert.deepEqual(ids, [ids[0], ids[0], ids[0]]);
    const users = await s.database.db
      .selectFrom('users')
      .select('id')
      .where('email', '=', 'twin@example.com')
      .execute();
    assert.equal(users.length, 1);
    const teams = await s.database.db
      .selectFrom('users_teams')
      .select('team_id')
      .where('user_id', '=', users[0]!.id)
      .execute();
    assert.equal(teams.length, 1, 'exactly one default team');
  });

  test('a private profile email falls back to the primary verified address; none is exchange_failed', async () => {
    const priv = githubUser('private', 'hidden@example.com', { email: null, name: null });
    const res = await flow('signup', priv);
    assert.equal(res.cookies.get('wrenn_oauth_email')!.value, 'hidden@example.com');
    assert.equal(res.cookies.get('wrenn_oauth_name')!.value, 'private', 'falls back to the login');
    const unverified = githubUser('unverified', 'u@example.com', {
      emails: [{ email: 'u@example.com', primary: true, verified: false }],
    });
    await unchanged(async () => {
      assert.equal((await flow('signup', unverified)).location, `${CALLBACK}?error=exchange_failed`);
    });
  });

  test('failures redirect with a precise error and change nothing', async () => {
    const pw = await s.api.signup('Taken');
    const stranger = githubUser('stranger', 'stranger@example.com');
    const collide = githubUser('collider', pw.email);
    await unchanged(async () => {
      assert.equal((await flow('login', stranger)).location, `${CALLBACK}?error=no_account`);
      assert.equal((await flow('signup', collide)).location, `${CALLBACK}?error=email_taken`);
      // The provider refused.
      assert.equal((await flow('signup', undefined)).location, `${CALLBACK}?error=access_denied`);
      // CSRF: no cookie, a forged MAC, a swapped intent, another state, an expired state.
      assert.equal(
        (await flow('signup', stranger, { cookie: () => undefined })).location,
        `${CALLBACK}?error=invalid_state`,
      );
      const forged = (c: string) => c.slice(0, -4) + (c.endsWith('0000') ? '1111' : '0000');
      assert.equal((await flow('signup', stranger, { cookie: forged })).location, `${CALLBACK}?error=invalid_state`);
      const swapped = (c: string) => c.replace('.login.', '.signup.');
      assert.equal((await flow('login', stranger, { cookie: swapped })).location, `${CALLBACK}?error=invalid_state`);
      const other = (u: URL) => u.searchParams.set('state', 'f'.repeat(32));
      assert.equal((await flow('signup', stranger, { callback: other })).location, `${CALLBACK}?error=invalid_state`);
      const old = new OAuthStateSigner(JWT_SECRET).issue('signup', Date.now() - 11 * 60 * 1000);
      const stale = (u: URL) => u.searchParams.set('state', old.nonce);
      assert.equal(
        (await flow('signup', stranger, { callback: stale, cookie: () => old.cookie })).location,
        `${CALLBACK}?error=invalid_state`,
      );
      // No code, or a code the provider does not accept.
      const noCode = (u: URL) => u.searchParams.delete('code');
      assert.equal((await flow('signup', stranger, { callback: noCode })).location, `${CALLBACK}?error=missing_code`);
      const badCode = (u: URL) => u.searchParams.set('code', 'not-a-real-code');
      assert.equal(
        (await flow('signup', stranger, { callback: badCode })).location,
        `${CALLBACK}?error=exchange_failed`,
      );
    });
  });

  test('a linked but deactivated account is refused', async () => {
    const u = githubUser('deact', 'deact@example.com');
    const first = await flow('signup', u);
    const id = parseId('user', first.cookies.get('wrenn_oauth_user_id')!.value);
    await s.database.db.updateTable('users').set({ status: 'disabled' }).where('id', '=', id).execute();
    assert.equal((await flow('login', u)).location, `${CALLBACK}?error=account_deactivated`);
  });

  test('unknown providers are 404 and a bad intent is 400, with the error shape', async () => {
    expectError(await s.api.get('/auth/oauth/gitlab'), 404, 'provider_not_found');
    expectError(await s.api.get('/auth/oauth/gitlab/callback?code=x&state=y'), 404, 'provider_not_found');
    expectError(await s.api.get('/auth/oauth/github?intent=admin'), 400, 'invalid_request');
  });

  test('the state signer rejects anything but its own fresh cookie', () => {
    const signer = new OAuthStateSigner(JWT_SECRET);
    const { nonce, cookie } = signer.issue('login');
    assert.equal(signer.verify(cookie, nonce), 'login');
    assert.equal(new OAuthStateSigner(JWT_SECRET + 'x').verify(cookie, nonce), null);
    assert.equal(signer.verify(cookie, nonce + 'a'), null);
    assert.equal(signer.verify(cookie + '0', nonce), null);
    assert.equal(signer.verify('a.b.c', nonce), null);
    assert.equal(signer.verify(undefined, nonce), null);
    assert.equal(signer.verify(cookie, nonce, Date.now() + 601_000), null);
  });
});
