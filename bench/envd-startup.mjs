#!/usr/bin/env node
// envd start-up benchmark. Builds the bundle (packages/envd/bundle/envd.mjs,
// from dist: run `npm run build` or `npx tsc -b packages/envd` first), then
// starts it N times (ENVD_BENCH_RUNS, default 20) as a capsule would: plain
// `node envd.mjs`, an environment with only PATH. Prints p50/p95 of
//   - spawn -> first successful GET /health (204)
//   - spawn -> first successful RPC (process.Process/List)
//   - envd's resident memory once ready,
// and, for scale, spawn -> first answer of a bare Node HTTP server.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RUNS = Number(process.env.ENVD_BENCH_RUNS ?? 20);
const bundle = path.join(root, 'packages/envd/bundle/envd.mjs');
execFileSync(process.execPath, [path.join(root, 'packages/envd/scripts/bundle.mjs')], { stdio: 'inherit' });

const bare = `import http from 'node:http';
const s = http.createServer((q, r) => { r.writeHead(204); r.end(); });
s.listen(0, '127.0.0.1', () => process.stdout.write('envd listening on ' + s.address().port + '\\n'));`;

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const fmt = (xs) => `p50 ${pct(xs, 50).toFixed(1)} ms, p95 ${pct(xs, 95).toFixed(1)} ms`;

function call(port, method, urlPath, body) {
  return new Promise((resolve) => {
    const req = http.request(
      { host: '127.0.0.1', port, method, path: urlPath, headers: body ? { 'content-type': 'application/json' } : {} },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      },
    );
    req.on('error', () => resolve(0));
    req.end(body);
  });
}

/** Spawns `args`, polls `probe` until it succeeds; returns ms from spawn to success (and the child). */
async function once(args, probes) {
  const t0 = performance.now();
  const child = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code}`)));
  });
  const times = [];
  for (const probe of probes) {
    while (!(await probe(port))) await new Promise((r) => setTimeout(r, 1));
    times.push(performance.now() - t0);
  }
  const rss = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'))[1]) / 1024;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  return { times, rss };
}

const health = async (port) => (await call(port, 'GET', '/health')) === 204;
const rpc = async (port) => (await call(port, 'POST', '/process.Process/List', '{}')) === 200;

const bareTimes = [];
const healthTimes = [];
const rpcTimes = [];
const rss = [];
for (let i = 0; i < RUNS; i++) {
  bareTimes.push((await once(['--input-type=module', '-e', bare], [health])).times[0]);
  const r = await once([bundle, '--port', '0', '--host', '127.0.0.1'], [health, rpc]);
  healthTimes.push(r.times[0]);
  rpcTimes.push(r.times[1]);
  rss.push(r.rss);
}
console.log(
  `envd start-up over ${RUNS} runs (bundle ${(fs.statSync(bundle).size / 1024).toFixed(0)} KiB, node ${process.version})`,
);
console.log(`  spawn -> GET /health 204:      ${fmt(healthTimes)}`);
console.log(`  spawn -> first RPC (List) 200: ${fmt(rpcTimes)}`);
console.log(`  bare node HTTP server:         ${fmt(bareTimes)}`);
console.log(`  envd RSS when ready:           p50 ${pct(rss, 50).toFixed(1)} MiB`);
