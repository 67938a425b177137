// GET /v1/users/search?email=<prefix>: autocomplete for adding members.
import { Type } from '@sinclair/typebox';
import { formatId } from '@wrenn/contracts';
import type { App, RouteContext } from '../server.js';
import { badRequest } from '../errors.js';
import { UserSearchResult, errorResponses } from './schemas.js';

/** Escapes LIKE's metacharacters so user input only ever matches literally. */
export function escapeLike(s: string): string {
  return s.replace(/[\\%_]/g, (c) => '\\' + c);
}

export function userRoutes(app: App, ctx: RouteContext): void {
  const { db, guards } = ctx;

  app.get(
    '/v1/users/search',
    {
      preHandler: guards.requireUser,
      schema: {
        summary: 'Find active users by email prefix',
        description: 'Prefix of at least 3 characters; at most 10 results, ordered by email.',
        tags: ['users'],
        security: [{ bearerAuth: [] }],
        querystring: Type.Object(
          { email: Type.String({ maxLength: 320, description: 'Email prefix, at least 3 characters' }) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Array(Type.Ref(UserSearchResult)), ...errorResponses(400, 401, 403) },
      },
    },
    async (request) => {
      const prefix = request.query.email.trim().toLowerCase();
      if (prefix.length < 3) throw badRequest('email prefix must be at least 3 characters');
      const rows = await db
        .selectFrom('users')
        .select(['id', 'email'])
        .where('status', '=', 'active')
        // PostgreSQL's LIKE escapes with a backslash by default.
        .where('email', 'like', escapeLike(prefix) + '%')
        .orderBy('email')
        .limit(10)
        .execute();
      return rows.map((r) => ({ user_id: formatId('user', r.id), email: r.email }));
    },
  );
}
