// Users, teams and memberships: the database work shared by signup, login,
// OAuth, the team routes and the admin bootstrap.
import { randomBytes } from 'node:crypto';
import { sql, type Kysely, type Transaction } from 'kysely';
import { formatId } from '@wrenn/contracts';
import type { DB, TeamRole, UserRow } from '../db/schema.js';
import type { SessionTokens } from '../auth/jwt.js';

export type Db = Kysely<DB> | Transaction<DB>;

const EMAIL_RE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
// Control characters (C0, DEL, C1) never belong in a display name.
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

/** Trimmed and lowercased; null when it does not look like an email address. */
export function normalizeEmail(raw: string): string | null {
  const email = raw.trim().toLowerCase();
  return email.length <= 254 && EMAIL_RE.test(email) ? email : null;
}

/** Trimmed display name, or null when empty, over 100 characters or containing control characters. */
export function normalizeName(raw: string): string | null {
  const name = raw.trim();
  return name.length >= 1 && name.length <= 100 && !CONTROL_RE.test(name) ? name : null;
}

/** `xxxxxx-yyyyyy` from 6 random bytes. */
export function newTeamSlug(): string {
  const hex = randomBytes(6).toString('hex');
  return `${hex.slice(0, 6)}-${hex.slice(6)}`;
}

export function defaultTeamName(userName: string): string {
  return `${userName}'s Team`.slice(0, 128);
}

export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  const e = err as { code?: string; constraint?: string };
  return e?.code === '23505' && (constraint === undefined || e.constraint === constraint);
}

export interface TeamRecord {
  id: string;
  name: string;
  slug: string;
  is_byoc: boolean;
  created_at: Date;
}

/** Inserts a team with a fresh slug (retrying the astronomically rare collision). */
export async function insertTeam(db: Db, name: string): Promise<TeamRecord> {
  for (let attempt = 0; ; attempt++) {
    const row = await db
      .insertInto('teams')
      .values({ name, slug: newTeamSlug() })
      .onConflict((oc) => oc.column('slug').doNothing())
      .returning(['id', 'name', 'slug', 'is_byoc', 'created_at'])
      .executeTakeFirst();
    if (row) return row;
    if (attempt >= 5) throw new Error('could not allocate a unique team slug');
  }
}

/** Creates a team owned by `userId`. */
export async function createTeamWithOwner(
  db: Db,
  userId: string,
  name: string,
  isDefault: boolean,
): Promise<TeamRecord> {
  const team = await insertTeam(db, name);
  await db
    .insertInto('users_teams')
    .values({ user_id: userId, team_id: team.id, role: 'owner', is_default: isDefault })
    .execute();
  return team;
}

/**
 * Creates an active user with a default team they own. The first user of a fresh
 * installation becomes a platform admin; an advisory lock makes that decision race-free.
 */
export async function createUserWithTeam(
  trx: Transaction<DB>,
  input: { email: string; name: string; passwordHash: string | null; isAdmin?: boolean },
): Promise<{ user: UserRow; team: TeamRecord }> {
  await sql`SELECT pg_advisory_xact_lock(7316200912746213002)`.execute(trx);
  const first = !(await trx.selectFrom('users').select('id').limit(1).executeTakeFirst());
  const user = await trx
    .insertInto('users')
    .values({
      email: input.email,
      name: input.name,
      password_hash: input.passwordHash,
      status: 'active',
      is_admin: input.isAdmin === true || first,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  const team = await createTeamWithOwner(trx, user.id, defaultTeamName(input.name), true);
  return { user, team };
}

export interface Membership {
  teamId: string;
  role: TeamRole;
  isDefault: boolean;
}

/** The caller's membership in a team that exists and is not deleted, or null. */
export async function getMembership(db: Db, userId: string, teamId: string): Promise<Membership | null> {
  const row = await db
    .selectFrom('users_teams as m')
    .innerJoin('teams as t', 't.id', 'm.team_id')
    .select(['m.team_id', 'm.role', 'm.is_default'])
    .where('m.user_id', '=', userId)
    .where('m.team_id', '=', teamId)
    .where('t.deleted_at', 'is', null)
    .executeTakeFirst();
  return row ? { teamId: row.team_id, role: row.role, isDefault: row.is_default } : null;
}

/**
 * The team a sign-in lands on: the default team, else the first active team joined,
 * else a new default team (the user lost all their teams).
 */
export async function loginTeam(db: Kysely<DB>, user: Pick<UserRow, 'id' | 'name'>): Promise<Membership> {
  const found = await firstActiveTeam(db, user.id);
  if (found) return found;
  return db.transaction().execute(async (trx) => {
    // Serialise with any concurrent sign-in of the same user, then look again.
    await trx.selectFrom('users').select('id').where('id', '=', user.id).forUpdate().execute();
    const again = await firstActiveTeam(trx, user.id);
    if (again) return again;
    // A previous default may point at a deleted team; the new team takes over.
    await trx.updateTable('users_teams').set({ is_default: false }).where('user_id', '=', user.id).execute();
    const team = await createTeamWithOwner(trx, user.id, defaultTeamName(user.name || 'My'), true);
    return { teamId: team.id, role: 'owner' as const, isDefault: true };
  });
}

/** The user's default team if still active, else the first active team joined. */
async function firstActiveTeam(db: Kysely<DB>, userId: string): Promise<Membership | null> {
  const row = await db
    .selectFrom('users_teams as m')
    .innerJoin('teams as t', 't.id', 'm.team_id')
    .select(['m.team_id', 'm.role', 'm.is_default'])
    .where('m.user_id', '=', userId)
    .where('t.deleted_at', 'is', null)
    .orderBy('m.is_default', 'desc')
    .orderBy('m.created_at', 'asc')
    .orderBy('m.team_id', 'asc')
    .limit(1)
    .executeTakeFirst();
  return row ? { teamId: row.team_id, role: row.role, isDefault: row.is_default } : null;
}

export interface AuthResponseBody {
  token: string;
  user_id: string;
  team_id: string;
  email: string;
  name: string;
}

export async function authResponse(
  tokens: SessionTokens,
  user: Pick<UserRow, 'id' | 'email' | 'name' | 'is_admin'>,
  membership: Pick<Membership, 'teamId' | 'role'>,
): Promise<AuthResponseBody> {
  const token = await tokens.sign({
    userId: user.id,
    teamId: membership.teamId,
    role: membership.role,
    email: user.email,
    name: user.name,
    isAdmin: user.is_admin,
  });
  return {
    token,
    user_id: formatId('user', user.id),
    team_id: formatId('team', membership.teamId),
    email: user.email,
    name: user.name,
  };
}
