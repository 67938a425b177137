// Migrations: ordered SQL files, one transaction, advisory lock, checksums,
// the schema's constraints, and the `migrate` command.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { PLATFORM_UUID } from '@wrenn/contracts';
import { loadMigrations, migrate, MIGRATIONS_DIR } from '../src/db/migrate.js';
import { MAIN_JS, createTestDatabase } from './helpers.js';

let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
let pool: pg.Pool;
before(async () => {
  tdb = await createTestDatabase();
  pool = new pg.Pool({ connectionString: tdb.url, max: 4 });
});
after(async () => {
  await pool?.end();
  await tdb?.drop();
});

describe('migrations', () => {
  test('control planes starting together apply each migration exactly once', async () => {
    const pools = [0, 1, 2, 3].map(() => new pg.Pool({ connectionString: tdb.url, max: 1 }));
    try {
      const results = await Promise.all(pools.map((p) => migrate(p)));
      const versions = loadMigrations().map((m) => m.version);
      assert.deepEqual(results.flat().sort(), versions);
      assert.equal(results.filter((r) => r.length > 0).length, 1);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
    const rows = await pool.query('SELECT version, checksum FROM schema_migrations ORDER BY version');
    assert.deepEqual(
      rows.rows.map((r) => r.version),
      loadMigrations().map((m) => m.version),
    );
    assert.deepEqual(await migrate(pool), [], 'a second run applies nothing');
    const platform = await pool.query('SELECT id, name, slug FROM teams');
    assert.deepEqual(platform.rows, [{ id: PLATFORM_UUID, name: 'Platform', slug: 'platform' }]);
  });

  test('the schema enforces the rules the application relies on', async () => {
    const q = (text: string, values: unknown[] = []) => pool.query(text, values);
    const u1 = (await q(`INSERT INTO users (email, name) VALUES ('one@example.com', 'One') RETURNING id`)).rows[0].id;
    const u2 = (await q(`INSERT INTO users (email, name) VALUES ('two@example.com', 'Two') RETURNING id`)).rows[0].id;
    const team = (await q(`INSERT INTO teams (name, slug) VALUES ('T', 'aaaaaa-bbbbbb') RETURNING id`)).rows[0].id;
    const rejects = async (text: string, values: unknown[], re: RegExp) => assert.rejects(q(text, values), re, text);

    await rejects(`INSERT INTO users (email) VALUES ('One@Example.com')`, [], /users_email_check/);
    await rejects(`INSERT INTO users (email) VALUES ('one@example.com')`, [], /users_email_key/);
    await rejects(`INSERT INTO users (email) VALUES ('no-at-sign')`, [], /users_email_check/);
    await rejects(`INSERT INTO users (email, status) VALUES ('s@example.com', 'zombie')`, [], /users_status_check/);
    await rejects(`INSERT INTO teams (name, slug) VALUES ('T2', 'aaaaaa-bbbbbb')`, [], /teams_slug_key/);
    await rejects(`INSERT INTO teams (name, slug) VALUES ('', 'x')`, [], /teams_name_check/);
    await q(`INSERT INTO users_teams (user_id, team_id, role, is_default) VALUES ($1, $2, 'owner', true)`, [u1, team]);
    await rejects(`INSERT INTO users_teams (user_id, team_id, role) VALUES ($1, $2, 'owner')`, [u2, team], /one_owner/);
    await rejects(`INSERT INTO users_teams (user_id, team_id, role) VALUES ($1, $2, 'boss')`, [u2, team], /role_check/);
    await rejects(`INSERT INTO users_teams (user_id, team_id) VALUES ($1, gen_random_uuid())`, [u2], /foreign key/);
    await rejects(
      `INSERT INTO team_api_keys (team_id, name, key_hash, key_prefix) VALUES ($1, 'k', 'not-a-hash', 'wrn_')`,
      [team],
      /key_hash_check/,
    );
    await rejects(
      `INSERT INTO audit_logs (team_id, actor_type, resource_type, action) VALUES ($1, 'robot', 'x', 'y')`,
      [team],
      /actor_type_check/,
    );
    // Deleting a user removes their memberships and links, and keeps their keys without a creator.
    await q(`INSERT INTO oauth_providers (provider, provider_id, user_id) VALUES ('github', '1', $1)`, [u2]);
    const key = (
      await q(
        `INSERT INTO team_api_keys (team_id, name, key_hash, key_prefix, created_by) VALUES ($1, 'k', $2, 'wrn_', $3) RETURNING id`,
        [team, 'a'.repeat(64), u1],
      )
    ).rows[0].id;
    await q(`DELETE FROM users WHERE id = $1`, [u1]);
    assert.equal((await q(`SELECT count(*)::int AS n FROM users_teams WHERE user_id = $1`, [u1])).rows[0].n, 0);
    assert.equal((await q(`SELECT created_by FROM team_api_keys WHERE id = $1`, [key])).rows[0].created_by, null);
    await q(`DELETE FROM users WHERE id = $1`, [u2]);
    assert.equal((await q(`SELECT count(*)::int AS n FROM oauth_providers`)).rows[0].n, 0);
  });

  test('an edited migration is refused; a failing one leaves nothing behind', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'wrenn-cp-mig-'));
    try {
      cpSync(MIGRATIONS_DIR, dir, { recursive: true });
      writeFileSync(path.join(dir, '9998_good.sql'), 'CREATE TABLE probe_good (id int);');
      writeFileSync(path.join(dir, '9999_bad.sql'), 'CREATE TABLE probe_bad (id int);\nSELECT no_such_function();');
      await assert.rejects(migrate(pool, dir), /migration 9999_bad\.sql failed: .*no_such_function/);
      const tables = await pool.query(`SELECT tablename FROM pg_tables WHERE tablename LIKE 'probe_%'`);
      assert.deepEqual(tables.rows, [], 'the whole run rolled back');
      const versions = await pool.query('SELECT version FROM schema_migrations');
      assert.ok(!versions.rows.some((r) => r.version >= '9998'));

      rmSync(path.join(dir, '9998_good.sql'));
      rmSync(path.join(dir, '9999_bad.sql'));
      appendFileSync(path.join(dir, loadMigrations()[0]!.version + '_foundation.sql'), '\n-- edited\n');
      await assert.rejects(migrate(pool, dir), /changed after it was applied/);

      writeFileSync(path.join(dir, 'oops.sql'), 'SELECT 1;');
      assert.throws(() => loadMigrations(dir), /0001_name\.sql/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('`main.js migrate` applies pending migrations and exits 0', async () => {
    const fresh = await createTestDatabase();
    const dataDir = mkdtempSync(path.join(tmpdir(), 'wrenn-cp-mig-data-'));
    try {
      const run = () =>
        spawnSync(process.execPath, [MAIN_JS, 'migrate'], {
          env: { PATH: process.env.PATH, DATABASE_URL: fresh.url, WRENN_DATA_DIR: dataDir },
          encoding: 'utf8',
          timeout: 60_000,
        });
      const first = run();
      assert.equal(first.status, 0, first.stderr);
      assert.equal(
        first.stdout.trim(),
        `applied migrations: ${loadMigrations()
          .map((m) => m.version)
          .join(', ')}`,
      );
      const second = run();
      assert.equal(second.status, 0, second.stderr);
      assert.equal(second.stdout.trim(), 'database is up to date');
    } finally {
      await fresh.drop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
