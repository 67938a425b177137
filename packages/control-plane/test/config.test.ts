// Configuration from the environment, and how main.js fails on bad configuration.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig } from '../src/config.js';
import { MAIN_JS } from './helpers.js';

function tmp(): string {
  return mkdtempSync(path.join(tmpdir(), 'wrenn-cp-config-'));
}

describe('loadConfig', () => {
  test('documented defaults; the JWT secret is generated once, 0600, and reused', () => {
    const dir = tmp();
    try {
      const c = loadConfig({ WRENN_DATA_DIR: dir });
      assert.equal(c.listenHost, '0.0.0.0');
      assert.equal(c.listenPort, 8000);
      assert.equal(c.databaseUrl, undefined);
      assert.equal(c.pgliteDir, path.join(dir, 'pglite'));
      assert.equal(c.redisUrl, undefined);
      assert.equal(c.logLevel, 'info');
      assert.equal(c.github, undefined);
      assert.equal(c.publicUrl, undefined);
      assert.equal(c.jwtSecretSource, 'generated');
      assert.deepEqual(c.pty, { pingIntervalMs: 30_000, idleTimeoutMs: 120_000 });
      assert.ok(c.jwtSecret.length >= 32);
      const file = path.join(dir, 'jwt-secret');
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.equal(readFileSync(file, 'utf8').trim(), c.jwtSecret);
      const again = loadConfig({ WRENN_DATA_DIR: dir });
      assert.equal(again.jwtSecret, c.jwtSecret);
      assert.equal(again.jwtSecretSource, 'file');
      // A secret file others can read is refused.
      chmodSync(file, 0o644);
      assert.throws(() => loadConfig({ WRENN_DATA_DIR: dir }), /chmod 600/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('explicit values', () => {
    const dir = tmp();
    try {
      const secret = 's'.repeat(40);
      const c = loadConfig({
        WRENN_DATA_DIR: dir,
        JWT_SECRET: secret,
        WRENN_CP_LISTEN_ADDR: '[::1]:9001',
        DATABASE_URL: 'postgresql://u@db:5432/wrenn',
        REDIS_URL: 'redis://cache:6379/2',
        LOG_LEVEL: 'DEBUG',
        WRENN_PUBLIC_URL: 'https://wrenn.example.com/',
        OAUTH_GITHUB_CLIENT_ID: 'id',
        OAUTH_GITHUB_CLIENT_SECRET: 'secret',
      });
      assert.equal(c.jwtSecret, secret);
      assert.equal(c.jwtSecretSource, 'env');
      assert.equal(existsSync(path.join(dir, 'jwt-secret')), false, 'nothing written when JWT_SECRET is given');
      assert.equal(c.listenHost, '::1');
      assert.equal(c.listenPort, 9001);
      assert.equal(c.databaseUrl, 'postgresql://u@db:5432/wrenn');
      assert.equal(c.redisUrl, 'redis://cache:6379/2');
      assert.equal(c.logLevel, 'debug');
      assert.equal(c.publicUrl, 'https://wrenn.example.com');
      assert.equal(c.oauthRedirectUrl, 'https://wrenn.example.com');
      assert.deepEqual(c.github, {
        clientId: 'id',
        clientSecret: 'secret',
        authorizeUrl: 'https://github.com/login/oauth/authorize',
        tokenUrl: 'https://github.com/login/oauth/access_token',
        apiUrl: 'https://api.github.com',
      });
      assert.equal(
        loadConfig({ WRENN_DATA_DIR: dir, JWT_SECRET: secret, WRENN_CP_LISTEN_ADDR: ':7000' }).listenHost,
        '0.0.0.0',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('bad values are ConfigErrors naming the variable', () => {
    const dir = tmp();
    const base = { WRENN_DATA_DIR: dir, JWT_SECRET: 'x'.repeat(32) };
    const cases: [Record<string, string>, RegExp][] = [
      [{ JWT_SECRET: 'short' }, /JWT_SECRET must be at least 32/],
      [{ WRENN_CP_LISTEN_ADDR: 'localhost' }, /WRENN_CP_LISTEN_ADDR/],
      [{ WRENN_CP_LISTEN_ADDR: '0.0.0.0:70000' }, /WRENN_CP_LISTEN_ADDR/],
      [{ DATABASE_URL: 'mysql://x/y' }, /DATABASE_URL must use postgres/],
      [{ DATABASE_URL: 'not a url' }, /DATABASE_URL is not a valid URL/],
      [{ REDIS_URL: 'http://x' }, /REDIS_URL/],
      [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL/],
      [{ WRENN_PTY_IDLE_TIMEOUT_SEC: '0' }, /WRENN_PTY_IDLE_TIMEOUT_SEC must be a number of seconds between 1 and/],
      [{ WRENN_PTY_PING_INTERVAL_SEC: 'often' }, /WRENN_PTY_PING_INTERVAL_SEC/],
      [{ WRENN_PUBLIC_URL: 'ftp://x' }, /WRENN_PUBLIC_URL/],
      [{ OAUTH_GITHUB_CLIENT_ID: 'id' }, /must be set together/],
      [{ OAUTH_GITHUB_CLIENT_ID: 'id', OAUTH_GITHUB_CLIENT_SECRET: 's' }, /WRENN_PUBLIC_URL/],
      [
        {
          OAUTH_GITHUB_CLIENT_ID: 'id',
          OAUTH_GITHUB_CLIENT_SECRET: 's',
          WRENN_PUBLIC_URL: 'http://x',
          OAUTH_GITHUB_TOKEN_URL: 'x',
        },
        /OAUTH_GITHUB_TOKEN_URL/,
      ],
    ];
    try {
      for (const [env, re] of cases) {
        assert.throws(
          () => loadConfig({ ...base, ...env }),
          (err: unknown) => err instanceof ConfigError && re.test(err.message),
          JSON.stringify(env),
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an unreadable secret file location fails cleanly', () => {
    const dir = tmp();
    try {
      writeFileSync(path.join(dir, 'blocker'), '');
      assert.throws(() => loadConfig({ WRENN_DATA_DIR: path.join(dir, 'blocker', 'sub') }), ConfigError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('main.js with bad configuration', () => {
  const dir = tmp();
  const run = (env: Record<string, string>, args: string[] = []) =>
    spawnSync(process.execPath, [MAIN_JS, ...args], {
      env: { PATH: process.env.PATH, WRENN_DATA_DIR: dir, ...env },
      encoding: 'utf8',
      timeout: 30_000,
    });

  test('exits 1 with exactly one clear line on stderr and no stack trace', () => {
    const cases: [Record<string, string>, string[], RegExp][] = [
      [{ JWT_SECRET: 'too-short' }, [], /JWT_SECRET must be at least 32 characters/],
      [{ LOG_LEVEL: 'chatty' }, [], /LOG_LEVEL/],
      [{ WRENN_CP_LISTEN_ADDR: 'nowhere' }, [], /WRENN_CP_LISTEN_ADDR/],
      [{ OAUTH_GITHUB_CLIENT_ID: 'only-id' }, [], /OAUTH_GITHUB_CLIENT_SECRET/],
      [{ DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none' }, [], /cannot connect to DATABASE_URL/],
      [{ DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none' }, ['migrate'], /cannot connect to DATABASE_URL/],
      [{}, ['frobnicate'], /unknown command "frobnicate"/],
      [{}, ['bootstrap-admin', '--email', 'a@b.co'], /--password/],
      [{}, ['bootstrap-admin', '--bogus'], /bogus/],
    ];
    try {
      for (const [env, args, re] of cases) {
        const r = run(env, args);
        const label = JSON.stringify({ env, args });
        assert.equal(r.status, 1, `${label}: ${r.stderr}`);
        const lines = r.stderr.split('\n').filter((l) => l !== '');
        assert.equal(lines.length, 1, `${label}: ${r.stderr}`);
        assert.match(lines[0]!, re, label);
        assert.match(lines[0]!, /^wrenn-control-plane: /);
        assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
        assert.equal(r.stdout, '', label);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
