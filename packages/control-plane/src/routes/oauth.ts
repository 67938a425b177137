// GET /auth/oauth/:provider and /auth/oauth/:provider/callback: sign in or sign up
// through an OAuth provider. Results reach the dashboard in short-lived cookies on
// path /auth/ (never in the URL, so tokens stay out of logs, history and Referer).
import { Type } from '@sinclair/typebox';
import type { FastifyReply } from 'fastify';
import type { App, RouteContext } from '../server.js';
import { notFound } from '../errors.js';
import { userActor } from '../audit/logger.js';
import { STATE_TTL_SECONDS, type OAuthIntent } from '../auth/oauth/state.js';
import {
  authResponse,
  createUserWithTeam,
  isUniqueViolation,
  loginTeam,
  normalizeEmail,
  normalizeName,
  type AuthResponseBody,
} from '../services/accounts.js';
import { StringEnum, errorResponses } from './schemas.js';

const STATE_COOKIE = 'oauth_state';
const STATE_COOKIE_PATH = '/auth/oauth/';
const RESULT_COOKIE_MAX_AGE = 60;

export type OAuthErrorCode =
  | 'access_denied'
  | 'invalid_state'
  | 'missing_code'
  | 'exchange_failed'
  | 'account_deactivated'
  | 'no_account'
  | 'email_taken'
  | 'internal_error';

const ProviderParams = Type.Object({ provider: Type.String({ description: 'e.g. github' }) });

export function oauthRoutes(app: App, ctx: RouteContext): void {
  const { db, audit, tokens, oauth, oauthState } = ctx;
  const secure = ctx.publicUrl?.startsWith('https://') ?? false;
  const redirectBase = (provider: string) => `${ctx.oauthRedirectUrl ?? ''}/auth/${provider}/callback`;

  function providerOr404(name: string) {
    const p = oauth.get(name);
    if (!p) throw notFound(`OAuth provider "${name.slice(0, 32)}" is not configured`, 'provider_not_found');
    return p;
  }

  app.get(
    '/auth/oauth/:provider',
    {
      schema: {
        summary: 'Start signing in with an OAuth provider',
        description: 'Sets a signed, HttpOnly state cookie (10 minutes) and redirects to the provider.',
        tags: ['auth'],
        params: ProviderParams,
        querystring: Type.Object({
          intent: Type.Optional(StringEnum(['login', 'signup'], { default: 'login' })),
        }),
        response: {
          302: Type.Null({ description: "Redirect to the provider's authorization page" }),
          ...errorResponses(400, 404),
        },
      },
    },
    async (request, reply) => {
      const provider = providerOr404(request.params.provider);
      const intent: OAuthIntent = request.query.intent ?? 'login';
      const { nonce, cookie } = oauthState.issue(intent);
      reply.setCookie(STATE_COOKIE, cookie, {
        path: STATE_COOKIE_PATH,
        maxAge: STATE_TTL_SECONDS,
        httpOnly: true,
        sameSite: 'lax',
        secure,
      });
      return reply.redirect(provider.authorizeUrl(nonce), 302);
    },
  );

  app.get(
    '/auth/oauth/:provider/callback',
    {
      schema: {
        summary: 'Where the OAuth provider sends the browser back',
        description:
          'Redirects to `{OAUTH_REDIRECT_URL}/auth/{provider}/callback`. On success the session is in cookies ' +
          '`wrenn_oauth_token`, `wrenn_oauth_user_id`, `wrenn_oauth_team_id`, `wrenn_oauth_email`, `wrenn_oauth_name` ' +
          '(path /auth/, 60 s; plus `wrenn_oauth_new_signup=1` for a new account); on failure the URL has `?error=` one of ' +
          'access_denied, invalid_state, missing_code, exchange_failed, account_deactivated, no_account, email_taken, internal_error.',
        tags: ['auth'],
        params: ProviderParams,
        querystring: Type.Object({
          code: Type.Optional(Type.String({ maxLength: 2048 })),
          state: Type.Optional(Type.String({ maxLength: 256 })),
          error: Type.Optional(Type.String({ maxLength: 256 })),
        }),
        response: { 302: Type.Null({ description: 'Redirect to the dashboard' }), ...errorResponses(400, 404) },
      },
    },
    async (request, reply) => {
      const name = request.params.provider;
      const provider = providerOr404(name);
      const base = redirectBase(name);
      const fail = (code: OAuthErrorCode) => reply.redirect(`${base}?error=${encodeURIComponent(code)}`, 302);

      const stateCookie = request.cookies[STATE_COOKIE];
      reply.clearCookie(STATE_COOKIE, { path: STATE_COOKIE_PATH, httpOnly: true, sameSite: 'lax', secure });
      if (request.query.error !== undefined) return fail('access_denied');
      const intent = oauthState.verify(stateCookie, request.query.state);
      if (!intent) return fail('invalid_state');
      if (!request.query.code) return fail('missing_code');

      let profile;
      try {
        profile = await provider.exchange(request.query.code);
      } catch (err) {
        request.log.warn({ provider: name, reason: (err as Error).message }, 'oauth: code exchange failed');
        return fail('exchange_failed');
      }
      const email = normalizeEmail(profile.email);
      if (!email) return fail('exchange_failed');

      const login = async (userId: string): Promise<OAuthErrorCode | AuthResponseBody> => {
        const user = await db.selectFrom('users').selectAll().where('id', '=', userId).executeTakeFirst();
        if (!user || user.status !== 'active') {
          audit.loginFailed('account_deactivated', 'github', user && { id: user.id, email: user.email });
          return 'account_deactivated';
        }
        const membership = await loginTeam(db, user);
        audit.userLoggedIn(userActor(user.id, user.name), membership.teamId, 'github');
        return authResponse(tokens, user, membership);
      };
      const linkedUser = async () =>
        (
          await db
            .selectFrom('oauth_providers')
            .select('user_id')
            .where('provider', '=', name)
            .where('provider_id', '=', profile.id)
            .executeTakeFirst()
        )?.user_id;

      try {
        const existing = await linkedUser();
        if (existing) return finish(reply, base, await login(existing));
        if (intent === 'login') {
          audit.loginFailed('no_account', 'github');
          return fail('no_account');
        }

        const taken = await db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirst();
        if (taken) {
          // A concurrent callback for this same identity may have just created the account.
          const raced = await linkedUser();
          if (raced) return finish(reply, base, await login(raced));
          audit.loginFailed('email_taken', 'github', { id: taken.id, email });
          return fail('email_taken');
        }
        const displayName =
          normalizeName(profile.name.slice(0, 100)) ??
          normalizeName(profile.login.slice(0, 100)) ??
          email.split('@')[0]!.slice(0, 100);
        // User, default team, membership and link in one transaction: all or nothing.
        const { user, team } = await db.transaction().execute(async (trx) => {
          const created = await createUserWithTeam(trx, { email, name: displayName, passwordHash: null });
          await trx
            .insertInto('oauth_providers')
            .values({ provider: name, provider_id: profile.id, user_id: created.user.id, email })
            .execute();
          return created;
        });
        audit.userSignedUp(userActor(user.id, user.name), team.id, 'github');
        reply.setCookie('wrenn_oauth_new_signup', '1', resultCookieOptions(secure));
        return finish(reply, base, await authResponse(tokens, user, { teamId: team.id, role: 'owner' }));
      } catch (err) {
        if (isUniqueViolation(err)) {
          // Another request created this account or link a moment ago: sign in as that account.
          const raced = await linkedUser().catch(() => undefined);
          if (raced) return finish(reply, base, await login(raced));
          if (isUniqueViolation(err, 'users_email_key')) return fail('email_taken');
        }
        // The browser is mid-redirect: answer with a redirect, never a JSON error page.
        request.log.error({ err }, 'oauth: sign-in failed');
        return fail('internal_error');
      }

      function finish(r: FastifyReply, to: string, result: OAuthErrorCode | AuthResponseBody) {
        if (typeof result === 'string') return r.redirect(`${to}?error=${result}`, 302);
        const opts = resultCookieOptions(secure);
        r.setCookie('wrenn_oauth_token', result.token, opts);
        r.setCookie('wrenn_oauth_user_id', result.user_id, opts);
        r.setCookie('wrenn_oauth_team_id', result.team_id, opts);
        r.setCookie('wrenn_oauth_email', result.email, opts);
        r.setCookie('wrenn_oauth_name', result.name, opts);
        return r.redirect(to, 302);
      }
    },
  );
}

/** Readable by the dashboard's script (it moves them to storage), gone after a minute. */
function resultCookieOptions(secure: boolean) {
  return { path: '/auth/', maxAge: RESULT_COOKIE_MAX_AGE, httpOnly: false, sameSite: 'lax' as const, secure };
}
