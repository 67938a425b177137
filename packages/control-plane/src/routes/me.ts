// GET/PATCH /v1/me, POST /v1/me/password
import { Type } from '@sinclair/typebox';
import { formatId, PLATFORM_UUID } from '@wrenn/contracts';
import type { App, RouteContext } from '../server.js';
import { badRequest, unauthorized } from '../errors.js';
import { sessionOf } from '../auth/guards.js';
import { hashPassword, passwordWeakness, verifyPassword } from '../auth/passwords.js';
import { userActor } from '../audit/logger.js';
import { authResponse, getMembership, loginTeam, normalizeName } from '../services/accounts.js';
import { AuthResponse, MeResponse, Name, NewPassword, errorResponses } from './schemas.js';

export function meRoutes(app: App, ctx: RouteContext): void {
  const { db, audit, tokens, guards } = ctx;
  const security = [{ bearerAuth: [] }];

  app.get(
    '/v1/me',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'The signed-in user',
        tags: ['account'],
        security,
        response: { 200: Type.Ref(MeResponse), ...errorResponses(401, 403) },
      },
    },
    async (request) => {
      const { user } = sessionOf(request);
      const providers = await db
        .selectFrom('oauth_providers')
        .select('provider')
        .where('user_id', '=', user.id)
        .orderBy('provider')
        .execute();
      return {
        id: formatId('user', user.id),
        name: user.name,
        email: user.email,
        is_admin: user.is_admin,
        has_password: user.has_password,
        providers: providers.map((p) => p.provider),
      };
    },
  );

  app.patch(
    '/v1/me',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Change the display name',
        description: 'Returns a new session token carrying the new name.',
        tags: ['account'],
        security,
        body: Type.Object({ name: Name }, { additionalProperties: false, title: 'UpdateMeRequest' }),
        response: { 200: Type.Ref(AuthResponse), ...errorResponses(400, 401, 403) },
      },
    },
    async (request) => {
      const { user, session } = sessionOf(request);
      const name = normalizeName(request.body.name);
      if (!name) throw badRequest('name must be 1–100 characters without control characters');
      const updated = await db
        .updateTable('users')
        .set({ name, updated_at: new Date() })
        .where('id', '=', user.id)
        .returning(['id', 'email', 'name', 'is_admin'])
        .executeTakeFirstOrThrow();
      const membership = (await getMembership(db, user.id, session.teamId)) ?? (await loginTeam(db, updated));
      if (name !== user.name) audit.userRenamed(userActor(user.id, name), membership.teamId, user.name, name);
      return authResponse(tokens, updated, membership);
    },
  );

  app.post(
    '/v1/me/password',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Change the password, or add one to an OAuth-only account',
        description:
          'With a password: `{current_password, new_password}` (a wrong current password is 401 `wrong_password`). ' +
          'OAuth-only accounts: `{new_password, confirm_password}`.',
        tags: ['account'],
        security,
        body: Type.Object(
          {
            current_password: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
            new_password: NewPassword,
            confirm_password: Type.Optional(Type.String({ maxLength: 1024 })),
          },
          { additionalProperties: false, title: 'ChangePasswordRequest' },
        ),
        response: { 204: Type.Null({ description: 'Password updated' }), ...errorResponses(400, 401, 403) },
      },
    },
    async (request, reply) => {
      const { user, session } = sessionOf(request);
      const { current_password, new_password, confirm_password } = request.body;
      const row = await db
        .selectFrom('users')
        .select('password_hash')
        .where('id', '=', user.id)
        .executeTakeFirstOrThrow();
      const adding = row.password_hash === null;
      if (adding) {
        if (confirm_password === undefined) throw badRequest('confirm_password is required to add a password');
        if (confirm_password !== new_password) {
          throw badRequest('new_password and confirm_password differ', 'password_mismatch');
        }
      } else {
        if (current_password === undefined) throw badRequest('current_password is required');
        if (!(await verifyPassword(current_password, row.password_hash!))) {
          throw unauthorized('current password is incorrect', 'wrong_password');
        }
      }
      const weak = passwordWeakness(new_password, { email: user.email, name: user.name });
      if (weak) throw badRequest(weak, 'weak_password');
      const hash = await hashPassword(new_password);
      await db
        .updateTable('users')
        .set({ password_hash: hash, updated_at: new Date() })
        .where('id', '=', user.id)
        .execute();
      // Logged in the session's team while the user still belongs to it, else where platform admins look.
      const team = (await getMembership(db, user.id, session.teamId))?.teamId ?? PLATFORM_UUID;
      audit.passwordChanged(userActor(user.id, user.name), team, adding);
      return reply.code(204).send(null);
    },
  );
}
