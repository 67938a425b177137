// API keys: `wrn_` + 32 hex characters, stored only as a SHA-256 hash. Lookups are
// cached for a few seconds and `last_used` is batched in memory, so an API-key
// request costs no database write and, when warm, no database read.
import { createHash, randomBytes } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { DB } from '../db/schema.js';

export const API_KEY_PREFIX = 'wrn_';
const API_KEY_RE = /^wrn_[0-9a-f]{32}$/;
/** How much of the key is kept in clear for display ("wrn_ab12cd"). */
export const VISIBLE_PREFIX_LEN = 10;
const MAX_CACHED = 50_000;

export function generateApiKey(): { key: string; hash: string; prefix: string } {
  const key = API_KEY_PREFIX + randomBytes(16).toString('hex');
  return { key, hash: hashApiKey(key), prefix: key.slice(0, VISIBLE_PREFIX_LEN) };
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

export interface ApiKeyIdentity {
  keyId: string;
  keyName: string;
  keyPrefix: string;
  teamId: string;
  createdBy: string | null;
  createdAt: Date;
  lastUsed: Date | null;
}

export interface ApiKeyAuthOptions {
  cacheTtlMs?: number;
  flushIntervalMs?: number;
}

/** Cross-process cache invalidation (Redis pub/sub when configured). */
export interface RevocationBus {
  publish(keyIds: string[]): void;
  subscribe(onRevoked: (keyIds: string[]) => void): void;
}

export class ApiKeyAuthenticator {
  private readonly cache = new Map<string, { identity: ApiKeyIdentity; expires: number }>();
  private lastUsed = new Map<string, Date>();
  private timer: NodeJS.Timeout | undefined;
  private readonly cacheTtlMs: number;
  private readonly flushIntervalMs: number;

  constructor(
    private readonly db: Kysely<DB>,
    private readonly log: Logger,
    opts: ApiKeyAuthOptions = {},
    private readonly bus?: RevocationBus,
  ) {
    this.cacheTtlMs = opts.cacheTtlMs ?? 5_000;
    this.flushIntervalMs = opts.flushIntervalMs ?? 30_000;
    bus?.subscribe((ids) => this.forget(ids));
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.flush(), this.flushIntervalMs);
    this.timer.unref();
  }

  /** Stops the flush timer and writes the last pending `last_used` values. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  /** The key's identity, or null when the key is malformed, unknown, revoked or its team deleted. */
  async authenticate(rawKey: string): Promise<ApiKeyIdentity | null> {
    if (!API_KEY_RE.test(rawKey)) return null;
    const hash = hashApiKey(rawKey);
    const now = Date.now();
    let hit = this.cache.get(hash);
    if (!hit || hit.expires <= now) {
      const row = await this.db
        .selectFrom('team_api_keys as k')
        .innerJoin('teams as t', 't.id', 'k.team_id')
        .select(['k.id', 'k.name', 'k.key_prefix', 'k.team_id', 'k.created_by', 'k.created_at', 'k.last_used'])
        .where('k.key_hash', '=', hash)
        .where('t.deleted_at', 'is', null)
        .executeTakeFirst();
      if (!row) {
        this.cache.delete(hash);
        return null;
      }
      hit = {
        identity: {
          keyId: row.id,
          keyName: row.name,
          keyPrefix: row.key_prefix,
          teamId: row.team_id,
          createdBy: row.created_by,
          createdAt: row.created_at,
          lastUsed: row.last_used,
        },
        expires: now + this.cacheTtlMs,
      };
      if (this.cache.size >= MAX_CACHED) this.sweep(now);
      this.cache.set(hash, hit);
    }
    const used = new Date(now);
    this.lastUsed.set(hit.identity.keyId, used);
    return { ...hit.identity, lastUsed: used };
  }

  /** The newest use not yet written to the database, if any. */
  pendingLastUsed(keyId: string): Date | undefined {
    return this.lastUsed.get(keyId);
  }

  /** Drops revoked keys from this process's cache and tells the other control planes. */
  revoked(keyIds: string[]): void {
    if (keyIds.length === 0) return;
    this.forget(keyIds);
    this.bus?.publish(keyIds);
  }

  private sweep(now: number): void {
    for (const [hash, entry] of this.cache) if (entry.expires <= now) this.cache.delete(hash);
    if (this.cache.size >= MAX_CACHED) this.cache.clear();
  }

  private forget(keyIds: string[]): void {
    const ids = new Set(keyIds);
    for (const [hash, entry] of this.cache) if (ids.has(entry.identity.keyId)) this.cache.delete(hash);
    for (const id of ids) this.lastUsed.delete(id);
  }

  /** Writes the batched `last_used` values in one statement. */
  async flush(): Promise<void> {
    if (this.lastUsed.size === 0) return;
    const batch = this.lastUsed;
    this.lastUsed = new Map();
    const rows = [...batch].map(([id, at]) => sql`(${id}::uuid, ${at.toISOString()}::timestamptz)`);
    try {
      await sql`UPDATE team_api_keys AS k SET last_used = v.at
        FROM (VALUES ${sql.join(rows)}) AS v(id, at)
        WHERE k.id = v.id AND (k.last_used IS NULL OR k.last_used < v.at)`.execute(this.db);
    } catch (err) {
      this.log.warn({ err, keys: batch.size }, 'api keys: failed to record last_used');
    }
  }
}
