// Authentication and authorization as Fastify preHandlers. Every decision is
// made against the database: JWT claims only say which user and team to load.
import type { FastifyRequest } from 'fastify';
import { sql, type Kysely } from 'kysely';
import type { DB, TeamRole, UserStatus } from '../db/schema.js';
import { forbidden, unauthorized } from '../errors.js';
import { apiKeyActor, userActor, type AuditActor } from '../audit/logger.js';
import type { ApiKeyAuthenticator, ApiKeyIdentity } from './api-keys.js';
import type { SessionClaims, SessionTokens } from './jwt.js';

/** The signed-in user as loaded from the database on this request (never the password hash). */
export interface SessionUser {
  id: string;
  email: string;
  name: string;
  is_admin: boolean;
  status: UserStatus;
  has_password: boolean;
}

export type AuthState =
  { kind: 'user'; user: SessionUser; session: SessionClaims } | { kind: 'api_key'; key: ApiKeyIdentity };

/** The team a request acts on; `role` is null for API keys (they act for the team, not a member). */
export interface TeamContext {
  id: string;
  role: TeamRole | null;
}

declare module 'fastify' {
  interface FastifyRequest {
    auth: AuthState | null;
    team: TeamContext | null;
  }
}

export type Guard = (request: FastifyRequest) => Promise<void>;

export interface Guards {
  /** A valid session JWT whose user exists and is active. */
  requireUser: Guard;
  /** requireUser, and the user is a platform admin according to the database. */
  requireAdmin: Guard;
  /** requireUser, and the user is still a member of the JWT's team (role from the database). */
  requireTeamMember: Guard;
  /** A valid `X-API-Key`. */
  requireApiKey: Guard;
  /** `X-API-Key` if present, else a session JWT with team membership: for capsule routes. */
  requireApiKeyOrUser: Guard;
}

function bearerToken(request: FastifyRequest): string | null {
  const h = request.headers.authorization;
  if (!h) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m ? m[1]! : null;
}

function apiKeyHeader(request: FastifyRequest): string | undefined {
  const v = request.headers['x-api-key'];
  return Array.isArray(v) ? v[0] : v;
}

export function createGuards(deps: { db: Kysely<DB>; tokens: SessionTokens; apiKeys: ApiKeyAuthenticator }): Guards {
  const { db, tokens, apiKeys } = deps;

  /**
   * Verifies the session token and loads its user (must be active) and, in the same
   * query, the user's role in the token's team when that team still exists.
   */
  async function loadSession(request: FastifyRequest): Promise<TeamRole | null> {
    const token = bearerToken(request);
    if (!token) throw unauthorized('missing "Authorization: Bearer <token>" header');
    const session = await tokens.verify(token);
    const row = await db
      .selectFrom('users as u')
      .leftJoin('users_teams as m', (j) => j.onRef('m.user_id', '=', 'u.id').on('m.team_id', '=', session.teamId))
      .leftJoin('teams as t', (j) => j.onRef('t.id', '=', 'm.team_id').on('t.deleted_at', 'is', null))
      .select([
        'u.id',
        'u.email',
        'u.name',
        'u.is_admin',
        'u.status',
        sql<boolean>`u.password_hash IS NOT NULL`.as('has_password'),
        sql<TeamRole | null>`CASE WHEN t.id IS NULL THEN NULL ELSE m.role END`.as('team_role'),
      ])
      .where('u.id', '=', session.userId)
      .executeTakeFirst();
    if (!row || row.status === 'deleted') throw unauthorized('the account of this session no longer exists');
    if (row.status !== 'active') throw forbidden('this account is deactivated', 'account_deactivated');
    const { team_role, ...user } = row;
    request.auth = { kind: 'user', user, session };
    return team_role;
  }

  const requireUser: Guard = async (request) => {
    await loadSession(request);
  };

  const requireAdmin: Guard = async (request) => {
    await loadSession(request);
    const auth = request.auth;
    if (auth?.kind !== 'user' || !auth.user.is_admin) throw forbidden('platform admin required');
  };

  const requireTeamMember: Guard = async (request) => {
    const role = await loadSession(request);
    if (!role) {
      throw forbidden("you are no longer a member of this session's team; sign in or switch team", 'not_a_member');
    }
    request.team = { id: (request.auth as Extract<AuthState, { kind: 'user' }>).session.teamId, role };
  };

  const requireApiKey: Guard = async (request) => {
    const raw = apiKeyHeader(request);
    if (!raw) throw unauthorized('missing "X-API-Key" header');
    const key = await apiKeys.authenticate(raw.trim());
    if (!key) throw unauthorized('invalid or revoked API key', 'invalid_api_key');
    request.auth = { kind: 'api_key', key };
    request.team = { id: key.teamId, role: null };
  };

  const requireApiKeyOrUser: Guard = async (request) => {
    if (apiKeyHeader(request) !== undefined) return requireApiKey(request);
    if (bearerToken(request) !== null) return requireTeamMember(request);
    throw unauthorized('missing "X-API-Key" or "Authorization: Bearer <token>" header');
  };

  return { requireUser, requireAdmin, requireTeamMember, requireApiKey, requireApiKeyOrUser };
}

/** The audit actor of an authenticated request. */
export function actorOf(request: FastifyRequest): AuditActor {
  const auth = request.auth;
  if (!auth) throw new Error('actorOf: request is not authenticated');
  return auth.kind === 'user' ? userActor(auth.user.id, auth.user.name) : apiKeyActor(auth.key.keyId, auth.key.keyName);
}

/** The session user of a request that passed requireUser (or a guard built on it). */
export function sessionOf(request: FastifyRequest): { user: SessionUser; session: SessionClaims } {
  const auth = request.auth;
  if (auth?.kind !== 'user') throw new Error('sessionOf: no user session on this request');
  return auth;
}

/** The team of a request that passed requireTeamMember / requireApiKey. */
export function teamOf(request: FastifyRequest): TeamContext {
  if (!request.team) throw new Error('teamOf: no team on this request');
  return request.team;
}
