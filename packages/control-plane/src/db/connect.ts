// Opens PostgreSQL (DATABASE_URL) or the embedded PGlite database, both behind
// node-postgres and Kysely's PostgresDialect, so the same SQL and driver code runs on both.
// (Kysely 0.28 has no PGlite dialect; PGlite ships a node-postgres connection instead.)
import { mkdirSync } from 'node:fs';
import pg from 'pg';
import { Kysely, PostgresDialect } from 'kysely';
import type { Logger } from 'pino';
import type { DB } from './schema.js';

export type DbKind = 'postgres' | 'pglite';

export interface Database {
  kind: DbKind;
  db: Kysely<DB>;
  pool: pg.Pool;
  close(): Promise<void>;
}

export interface OpenOptions {
  databaseUrl?: string;
  /** Directory of the embedded database; `memory://` keeps it in memory. */
  pgliteDir?: string;
  log?: Logger;
  poolSize?: number;
}

function wrap(kind: DbKind, pool: pg.Pool, extraClose: () => Promise<void>, log?: Logger): Database {
  // An idle client losing its connection must not crash the process.
  pool.on('error', (err) => log?.error({ err }, 'database connection error'));
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
  let closed = false;
  return {
    kind,
    db,
    pool,
    async close() {
      if (closed) return;
      closed = true;
      await db.destroy(); // ends the pool
      await extraClose();
    },
  };
}

export async function openDatabase(opts: OpenOptions): Promise<Database> {
  if (opts.databaseUrl) {
    const pool = new pg.Pool({
      connectionString: opts.databaseUrl,
      max: opts.poolSize ?? 10,
      connectionTimeoutMillis: 10_000,
      idleTimeoutMillis: 30_000,
    });
    try {
      await pool.query('SELECT 1');
    } catch (err) {
      await pool.end().catch(() => {});
      throw new Error(`cannot connect to DATABASE_URL: ${(err as Error).message}`);
    }
    return wrap('postgres', pool, async () => {}, opts.log);
  }

  const dir = opts.pgliteDir ?? 'memory://';
  if (!dir.startsWith('memory://')) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { PGlite } = await import('@electric-sql/pglite');
  const { createPgConfig } = await import('@electric-sql/pglite/node-postgres');
  let pglite;
  try {
    pglite = await PGlite.create(dir);
  } catch (err) {
    throw new Error(`cannot open the embedded database in ${dir}: ${(err as Error).message}`);
  }
  // PGlite is one session: a pool of one serialises queries and keeps transactions whole.
  const pool = new pg.Pool(createPgConfig(pglite) as unknown as pg.PoolConfig);
  return wrap('pglite', pool, () => pglite.close(), opts.log);
}
