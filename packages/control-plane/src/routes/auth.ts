// POST /v1/auth/signup, /v1/auth/login, /v1/auth/switch-team
import { Type } from '@sinclair/typebox';
import type { App, RouteContext } from '../server.js';
import { badRequest, conflict, forbidden, notFound, parseIdParam, unauthorized } from '../errors.js';
import { dummyPasswordCheck, hashPassword, passwordWeakness, verifyPassword } from '../auth/passwords.js';
import { sessionOf } from '../auth/guards.js';
import { userActor } from '../audit/logger.js';
import {
  authResponse,
  createUserWithTeam,
  getMembership,
  isUniqueViolation,
  loginTeam,
  normalizeEmail,
  normalizeName,
} from '../services/accounts.js';
import { AuthResponse, Email, Name, NewPassword, errorResponses } from './schemas.js';

export function authRoutes(app: App, ctx: RouteContext): void {
  const { db, audit, tokens, guards } = ctx;

  app.post(
    '/v1/auth/signup',
    {
      schema: {
        summary: 'Create an account',
        description:
          'Creates an active user and their default team ("{name}\'s Team", role owner) and returns a session at once.',
        tags: ['auth'],
        body: Type.Object(
          { email: Email, password: NewPassword, name: Name },
          { additionalProperties: false, title: 'SignupRequest' },
        ),
        response: { 201: Type.Ref(AuthResponse), ...errorResponses(400, 409) },
      },
    },
    async (request, reply) => {
      const email = normalizeEmail(request.body.email);
      if (!email) throw badRequest('email is not a valid email address');
      const name = normalizeName(request.body.name);
      if (!name) throw badRequest('name must be 1–100 characters without control characters');
      const weak = passwordWeakness(request.body.password, { email, name });
      if (weak) throw badRequest(weak, 'weak_password');

      const taken = await db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirst();
      if (taken) throw conflict('an account with this email already exists', 'email_taken');

      const passwordHash = await hashPassword(request.body.password);
      let created;
      try {
        created = await db.transaction().execute((trx) => createUserWithTeam(trx, { email, name, passwordHash }));
      } catch (err) {
        if (isUniqueViolation(err, 'users_email_key')) {
          throw conflict('an account with this email already exists', 'email_taken');
        }
        throw err;
      }
      const { user, team } = created;
      audit.userSignedUp(userActor(user.id, user.name), team.id, 'password');
      return reply.code(201).send(await authResponse(tokens, user, { teamId: team.id, role: 'owner' }));
    },
  );

  app.post(
    '/v1/auth/login',
    {
      schema: {
        summary: 'Sign in with email and password',
        description:
          'Returns a session for the default team, else the first team joined; creates a default team when the user has none.',
        tags: ['auth'],
        body: Type.Object(
          { email: Email, password: Type.String({ minLength: 1, maxLength: 1024 }) },
          { additionalProperties: false, title: 'LoginRequest' },
        ),
        response: { 200: Type.Ref(AuthResponse), ...errorResponses(400, 401, 403) },
      },
    },
    async (request) => {
      const email = request.body.email.trim().toLowerCase();
      const user = await db.selectFrom('users').selectAll().where('email', '=', email).executeTakeFirst();
      if (!user || user.status === 'deleted' || user.password_hash === null) {
        // Same work as a real check, so response time does not tell which emails exist.
        await dummyPasswordCheck(request.body.password);
        audit.loginFailed(user ? 'no_password' : 'unknown_email', 'password', user && { id: user.id, email });
        throw unauthorized('invalid email or password', 'invalid_credentials');
      }
      if (!(await verifyPassword(request.body.password, user.password_hash))) {
        audit.loginFailed('wrong_password', 'password', { id: user.id, email });
        throw unauthorized('invalid email or password', 'invalid_credentials');
      }
      if (user.status !== 'active') {
        audit.loginFailed('account_deactivated', 'password', { id: user.id, email });
        throw forbidden('this account is deactivated', 'account_deactivated');
      }
      const membership = await loginTeam(db, user);
      audit.userLoggedIn(userActor(user.id, user.name), membership.teamId, 'password');
      return authResponse(tokens, user, membership);
    },
  );

  app.post(
    '/v1/auth/switch-team',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Switch the session to another team',
        description:
          'Re-issues the session JWT for a team the user belongs to (checked in the database). ' +
          'A team that does not exist, is deleted, or that the user is not a member of is a 404, so team ids do not leak.',
        tags: ['auth'],
        security: [{ bearerAuth: [] }],
        body: Type.Object(
          { team_id: Type.String({ description: 'team-…' }) },
          { additionalProperties: false, title: 'SwitchTeamRequest' },
        ),
        response: { 200: Type.Ref(AuthResponse), ...errorResponses(400, 401, 404) },
      },
    },
    async (request) => {
      const { user, session } = sessionOf(request);
      const teamId = parseIdParam('team', request.body.team_id, 'team_id');
      const membership = await getMembership(db, user.id, teamId);
      if (!membership) throw notFound('team not found', 'team_not_found');
      audit.teamSwitched(userActor(user.id, user.name), teamId, session.teamId);
      return authResponse(tokens, user, membership);
    },
  );
}
