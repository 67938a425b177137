#!/usr/bin/env node
// Control-plane request throughput and latency.
//
//   node bench/cp-bench.mjs [--duration 10] [--connections 16]
//
// Starts the real control plane (packages/control-plane/dist/src/main.js, build first) in a
// child process against a fresh PostgreSQL database (WRENN_TEST_DATABASE_URL, default
// postgres://postgres@127.0.0.1:5432/postgres), pinned to one core when `taskset` exists, with the
// load generator (autocannon, keep-alive) on the other core. Prints requests/s and p50/p99 latency for:
//   GET /v1/me                (session JWT: verify + load the user)
//   GET /v1/api-keys          (session JWT: + membership + list query)
//   GET /v1/api-keys/current  (X-API-Key: hash + cached lookup)
// Target: the API-key read at >= 3,000 req/s with p99 < 10 ms.
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, openSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, cpus } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import autocannon from 'autocannon';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MAIN_JS = path.join(ROOT, 'packages/control-plane/dist/src/main.js');
const { values: args } = parseArgs({
  options: { duration: { type: 'string', default: '10' }, connections: { type: 'string', default: '16' } },
});
const DURATION = Number(args.duration);
const CONNECTIONS = Number(args.connections);
const ADMIN_URL = process.env.WRENN_TEST_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';

function hasTaskset() {
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
    return cpus().length >= 2;
  } catch {
    return false;
  }
}

async function freePort() {
  const srv = createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

async function json(url, init) {
  const res = await fetch(url, init);
  const body = await res.json();
  if (!res.ok) throw new Error(`${init?.method ?? 'GET'} ${url}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

function run(title, opts) {
  return new Promise((resolve, reject) => {
    autocannon({ connections: CONNECTIONS, duration: DURATION, ...opts }, (err, result) => {
      if (err) return reject(err);
      if (result.non2xx || result.errors) {
        return reject(new Error(`${title}: ${result.non2xx} non-2xx, ${result.errors} errors`));
      }
      resolve({
        title,
        rps: result.requests.average,
        p50: result.latency.p50,
        p99: result.latency.p99,
        total: result.requests.total,
      });
    });
  });
}

async function main() {
  const dbName = `wrenn_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  const dbUrl = new URL(ADMIN_URL);
  dbUrl.pathname = '/' + dbName;
  const dataDir = mkdtempSync(path.join(tmpdir(), 'wrenn-cp-bench-'));
  const logFile = path.join(dataDir, 'control-plane.log');
  const port = await freePort();
  const pin = hasTaskset();
  const logFd = openSync(logFile, 'a');
  const cmd = pin ? ['taskset', ['-c', '0', process.execPath, MAIN_JS]] : [process.execPath, [MAIN_JS]];
  const server = spawn(cmd[0], cmd[1], {
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: dbUrl.toString(),
      WRENN_DATA_DIR: dataDir,
      WRENN_CP_LISTEN_ADDR: `127.0.0.1:${port}`,
      LOG_LEVEL: process.env.LOG_LEVEL || 'info',
    },
    stdio: ['ignore', logFd, logFd],
  });
  closeSync(logFd);
  if (pin) {
    // The load generator gets the other core.
    execFileSync('taskset', ['-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
  }
  const base = `http://127.0.0.1:${port}`;
  try {
    for (let i = 0; ; i++) {
      try {
        if ((await fetch(`${base}/health`)).ok) break;
      } catch {
        /* not up yet */
      }
      if (i > 600 || server.exitCode !== null) throw new Error(`control plane did not start; see ${logFile}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const email = `bench-${randomBytes(4).toString('hex')}@example.com`;
    const auth = await json(`${base}/v1/auth/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: 'Bench-' + randomBytes(8).toString('hex'), name: 'Bench' }),
    });
    const jwt = { authorization: `Bearer ${auth.token}` };
    for (let i = 0; i < 5; i++) {
      await json(`${base}/v1/api-keys`, {
        method: 'POST',
        headers: { ...jwt, 'content-type': 'application/json' },
        body: JSON.stringify({ name: `bench ${i}` }),
      });
    }
    const { key } = await json(`${base}/v1/api-keys`, {
      method: 'POST',
      headers: { ...jwt, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'bench key' }),
    });

    // Warm-up (JIT, pools, caches), then the measured runs.
    await run('warm-up', { url: `${base}/v1/api-keys/current`, headers: { 'x-api-key': key }, duration: 2 });
    const results = [
      await run('GET /v1/me (JWT)', { url: `${base}/v1/me`, headers: jwt }),
      await run('GET /v1/api-keys (JWT, 6 keys)', { url: `${base}/v1/api-keys`, headers: jwt }),
      await run('GET /v1/api-keys/current (API key)', {
        url: `${base}/v1/api-keys/current`,
        headers: { 'x-api-key': key },
      }),
      // The same read held at the target rate: the latency a client sees at 3,000 req/s.
      await run('GET /v1/api-keys/current (API key) at 3,000 req/s', {
        url: `${base}/v1/api-keys/current`,
        headers: { 'x-api-key': key },
        overallRate: 3000,
      }),
    ];

    console.log(
      `control plane: ${DURATION} s per route, ${CONNECTIONS} keep-alive connections, ` +
        `server ${pin ? 'pinned to core 0, load generator on core 1' : 'unpinned'}, LOG_LEVEL=${process.env.LOG_LEVEL || 'info'}`,
    );
    console.log('| route | req/s | p50 | p99 |');
    console.log('| --- | ---: | ---: | ---: |');
    for (const r of results) {
      console.log(`| ${r.title} | ${Math.round(r.rps).toLocaleString('en-US')} | ${r.p50} ms | ${r.p99} ms |`);
    }
    const [max, atTarget] = [results[2], results[3]];
    const ok = max.rps >= 3000 && atTarget.p99 < 10;
    console.log(
      `API-key read target (>= 3,000 req/s with p99 < 10 ms): ${ok ? 'met' : 'NOT met'} ` +
        `(max ${Math.round(max.rps)} req/s; p99 ${atTarget.p99} ms at 3,000 req/s, ${max.p99} ms at max)`,
    );
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => (server.exitCode !== null ? r() : server.on('exit', r)));
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.end();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
