#!/usr/bin/env node
// envd request and data-path benchmark, against the bundled envd (run
// bench/envd-startup.mjs or `npm run build` first so the bundle exists) on
// 127.0.0.1 over HTTP/1.1 keep-alive. Run as root. Prints:
//   - exec round trip (Start `true` to its end event) p50/p95
//   - Stat round trip as root and as `nobody` (the per-user credential switch)
//   - process output throughput (stdout of `head -c 256M /dev/zero`)
//   - /files upload and download throughput (256 MiB)
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { clients } from '../packages/envd/dist/test/helpers.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bundle = path.join(root, 'packages/envd/bundle/envd.mjs');
if (!fs.existsSync(bundle)) throw new Error(`no bundle at ${bundle}: run npm run build first`);

const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const fmt = (xs) => `p50 ${pct(xs, 50).toFixed(2)} ms, p95 ${pct(xs, 95).toFixed(2)} ms`;
const MiB = 1024 * 1024;

const child = spawn(process.execPath, [bundle, '--port', '0', '--host', '127.0.0.1'], {
  env: { PATH: process.env.PATH },
  stdio: ['ignore', 'pipe', 'inherit'],
});
const port = await new Promise((resolve) => {
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
    const m = /listening on (\d+)/.exec(out);
    if (m) resolve(Number(m[1]));
  });
});
const base = `http://127.0.0.1:${port}`;
// Node's global agent keeps connections alive, as a real client would.
const agent = http.globalAgent;
const { process: proc, fs: files } = clients(base, '1.1');
const asUser = (u) => ({ headers: { authorization: 'Basic ' + Buffer.from(`${u}:`).toString('base64') } });

async function run(cmd, args) {
  let bytes = 0;
  for await (const m of proc.start({ process: { cmd, args } })) {
    if (m.event?.event.case === 'data') bytes += m.event.event.value.output.value.length;
  }
  return bytes;
}

try {
  for (let i = 0; i < 20; i++) await run('true', []);
  const exec = [];
  for (let i = 0; i < 200; i++) {
    const t = performance.now();
    await run('true', []);
    exec.push(performance.now() - t);
  }
  console.log(`exec round trip (Start true):  ${fmt(exec)}`);

  for (const [label, opts] of [
    ['root', {}],
    ['nobody', asUser('nobody')],
  ]) {
    for (let i = 0; i < 20; i++) await files.stat({ path: '/tmp' }, opts);
    const xs = [];
    for (let i = 0; i < 300; i++) {
      const t = performance.now();
      await files.stat({ path: '/tmp' }, opts);
      xs.push(performance.now() - t);
    }
    console.log(`Stat as ${label.padEnd(6)}:              ${fmt(xs)}`);
  }

  let t = performance.now();
  const n = await run('head', ['-c', String(256 * MiB), '/dev/zero']);
  console.log(`process stdout throughput:     ${(n / MiB / ((performance.now() - t) / 1000)).toFixed(0)} MiB/s`);

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'envd-bench-'));
  const target = path.join(tmp, 'big.bin');
  const chunk = Buffer.alloc(MiB, 7);
  t = performance.now();
  await new Promise((resolve, reject) => {
    const req = http.request(`${base}/files?path=${encodeURIComponent(target)}`, {
      method: 'POST',
      agent,
      headers: { 'content-type': 'application/octet-stream' },
    });
    req.on('response', (res) => res.resume().on('end', resolve));
    req.on('error', reject);
    let i = 0;
    const write = () => {
      while (i < 256) {
        i++;
        if (!req.write(chunk)) return req.once('drain', write);
      }
      req.end();
    };
    write();
  });
  console.log(`/files upload (256 MiB):       ${(256 / ((performance.now() - t) / 1000)).toFixed(0)} MiB/s`);
  t = performance.now();
  await new Promise((resolve, reject) =>
    http
      .get(`${base}/files?path=${encodeURIComponent(target)}`, { agent }, (res) => res.resume().on('end', resolve))
      .on('error', reject),
  );
  console.log(`/files download (256 MiB):     ${(256 / ((performance.now() - t) / 1000)).toFixed(0)} MiB/s`);
  fs.rmSync(tmp, { recursive: true, force: true });
} finally {
  child.kill('SIGTERM');
}
