// ensureBootstrapAdmin: the first platform admin of a fresh installation.
import pino from 'pino';
import type { Kysely } from 'kysely';
import { sql } from 'kysely';
import type { DB } from './db/schema.js';
import { AuditLogger } from './audit/logger.js';
import { generateApiKey } from './auth/api-keys.js';
import { hashPassword, passwordWeakness } from './auth/passwords.js';
import { createUserWithTeam, loginTeam, normalizeEmail, normalizeName } from './services/accounts.js';

export interface BootstrapAdminInput {
  email: string;
  password: string;
  name?: string;
}

export interface BootstrapAdminResult {
  userId: string;
  teamId: string;
  /** The new admin's API key: only when the admin was created by this call. */
  apiKey?: string;
  created: boolean;
}

/**
 * When the users table is empty: creates an active platform admin with a default team
 * and an API key. Otherwise changes nothing and returns the account with that email,
 * else the oldest platform admin. Safe to call from several processes at once.
 */
export async function ensureBootstrapAdmin(
  db: Kysely<DB>,
  input: BootstrapAdminInput,
  opts: { audit?: AuditLogger } = {},
): Promise<BootstrapAdminResult> {
  const email = normalizeEmail(input.email);
  if (!email) throw new Error('bootstrap admin: email is not a valid email address');
  const name = normalizeName(input.name ?? 'Admin');
  if (!name) throw new Error('bootstrap admin: name must be 1–100 characters');

  const outcome = await db.transaction().execute(async (trx) => {
    // The same lock signup takes, so "the table is empty" stays true until we commit.
    await sql`SELECT pg_advisory_xact_lock(7316200912746213002)`.execute(trx);
    const anyUser = await trx.selectFrom('users').select('id').limit(1).executeTakeFirst();
    if (anyUser) {
      const existing =
        (await trx.selectFrom('users').select(['id', 'name']).where('email', '=', email).executeTakeFirst()) ??
        (await trx
          .selectFrom('users')
          .select(['id', 'name'])
          .where('is_admin', '=', true)
          .where('status', '=', 'active')
          .orderBy('created_at')
          .limit(1)
          .executeTakeFirst());
      if (!existing) throw new Error('bootstrap admin: users exist but none is an active platform admin');
      return { created: false as const, user: existing };
    }
    const weak = passwordWeakness(input.password, { email, name });
    if (weak) throw new Error(`bootstrap admin: ${weak}`);
    const { user, team } = await createUserWithTeam(trx, {
      email,
      name,
      passwordHash: await hashPassword(input.password),
      isAdmin: true,
    });
    const key = generateApiKey();
    await trx
      .insertInto('team_api_keys')
      .values({
        team_id: team.id,
        name: 'Bootstrap admin key',
        key_hash: key.hash,
        key_prefix: key.prefix,
        created_by: user.id,
      })
      .execute();
    return { created: true as const, user, teamId: team.id, apiKey: key.key };
  });

  if (!outcome.created) {
    const team = await loginTeam(db, outcome.user);
    return { userId: outcome.user.id, teamId: team.teamId, created: false };
  }
  const audit = opts.audit ?? new AuditLogger(db, pino({ level: 'silent' }));
  audit.adminBootstrapped(outcome.user.id, outcome.teamId, email);
  if (!opts.audit) await audit.drain();
  return { userId: outcome.user.id, teamId: outcome.teamId, apiKey: outcome.apiKey, created: true };
}
