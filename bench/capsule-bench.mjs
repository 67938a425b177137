#!/usr/bin/env node
// Capsules end to end, through the public HTTP API only: a real control plane
// (PostgreSQL), a registered host agent, real capsules. Run as root after
// `npm run build` and setup:
//   node bench/capsule-bench.mjs
// Prints: create→running p50/p95 (sequential), exec `echo hi` round trip
// p50/p95, file write+read throughput for 1 MiB and 100 MiB (streamed routes),
// and 20 concurrent creates (wall time, per-create p50/p95, failures).
import { performance } from 'node:perf_hooks';
import { startPlatform } from '../packages/testkit/dist/src/index.js';
import { apiCaller, fmt, pct } from './lib.mjs';

const CREATES = Number(process.env.CAPSULE_BENCH_CREATES ?? 30);
const EXECS = Number(process.env.CAPSULE_BENCH_EXECS ?? 300);
const CONCURRENT = Number(process.env.CAPSULE_BENCH_CONCURRENT ?? 20);

process.stdout.on('error', () => {});

const p = await startPlatform({ prefix: 'cbn', subnetBase: '10.246' });
const headers = { 'x-api-key': p.apiKey };
const call = apiCaller(p);
const create = () => call('POST', '/v1/capsules', { template: 'minimal', memory_mb: 256 });
const destroy = (id) => call('DELETE', `/v1/capsules/${id}`);

try {
  // Warm-up: the first create pays for caches (disk image, envd bundle page cache).
  await destroy((await create()).id);

  const creates = [];
  for (let i = 0; i < CREATES; i++) {
    const t = performance.now();
    const c = await create();
    creates.push(performance.now() - t);
    if (c.status !== 'running') throw new Error(`created capsule is ${c.status}`);
    await destroy(c.id);
  }
  console.log(`create→running (${CREATES} sequential): p50 ${fmt(pct(creates, 50))}, p95 ${fmt(pct(creates, 95))}`);

  const capsule = await create();
  const execs = [];
  for (let i = 0; i < EXECS; i++) {
    const t = performance.now();
    const r = await call('POST', `/v1/capsules/${capsule.id}/exec`, { cmd: 'echo', args: ['hi'] });
    execs.push(performance.now() - t);
    if (r.stdout !== 'hi\n') throw new Error(`unexpected exec output ${JSON.stringify(r)}`);
  }
  console.log(`exec echo hi (${EXECS}): p50 ${fmt(pct(execs, 50))}, p95 ${fmt(pct(execs, 95))}`);

  for (const size of [1024 * 1024, 100 * 1024 * 1024]) {
    const data = Buffer.alloc(size, 0x61);
    const form = new FormData();
    form.append('path', '/tmp/bench.bin');
    form.append('file', new Blob([data]), 'bench.bin');
    let t = performance.now();
    const w = await fetch(`${p.baseUrl}/v1/capsules/${capsule.id}/files/stream/write`, {
      method: 'POST',
      headers,
      body: form,
    });
    if (!w.ok) throw new Error(`write: ${w.status} ${await w.text()}`);
    await w.arrayBuffer();
    const writeMs = performance.now() - t;
    t = performance.now();
    const r = await fetch(`${p.baseUrl}/v1/capsules/${capsule.id}/files/stream/read`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify({ path: '/tmp/bench.bin' }),
    });
    if (!r.ok) throw new Error(`read: ${r.status} ${await r.text()}`);
    let got = 0;
    for await (const chunk of r.body) got += chunk.length;
    const readMs = performance.now() - t;
    if (got !== size) throw new Error(`read ${got} bytes, wrote ${size}`);
    const mib = size / 1024 / 1024;
    console.log(
      `files ${mib} MiB: write ${fmt(writeMs)} (${(mib / (writeMs / 1000)).toFixed(0)} MiB/s), ` +
        `read ${fmt(readMs)} (${(mib / (readMs / 1000)).toFixed(0)} MiB/s)`,
    );
  }
  await destroy(capsule.id);

  const t0 = performance.now();
  const each = [];
  const results = await Promise.allSettled(
    Array.from({ length: CONCURRENT }, async () => {
      const t = performance.now();
      const c = await create();
      each.push(performance.now() - t);
      return c.id;
    }),
  );
  const wall = performance.now() - t0;
  const ok = results.filter((r) => r.status === 'fulfilled');
  console.log(
    `${CONCURRENT} concurrent creates: all running after ${fmt(wall)}; per create p50 ${fmt(pct(each, 50))}, ` +
      `p95 ${fmt(pct(each, 95))}; ${CONCURRENT - ok.length} failed`,
  );
  for (const r of results) if (r.status === 'rejected') console.log(`  failure: ${r.reason.message}`);
  await Promise.all(ok.map((r) => destroy(r.value)));
} finally {
  await p.stop();
}
