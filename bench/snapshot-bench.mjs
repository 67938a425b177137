#!/usr/bin/env node
// Snapshots end to end, through the public HTTP API only: a real control plane
// (PostgreSQL), a registered host agent, real capsules. Run as root after
// `npm run build` and setup:
//   node bench/snapshot-bench.mjs
// Prints: snapshot time and stored template size (allocated bytes) for a
// capsule with 100 MiB of new random files, the same for a fresh capsule (the
// template's own share), and create-from-snapshot p50/p95 over sequential
// creates.
import { performance } from 'node:perf_hooks';
import { startPlatform } from '../packages/testkit/dist/src/index.js';
import { apiCaller, fmt, pct } from './lib.mjs';

const CREATES = Number(process.env.SNAPSHOT_BENCH_CREATES ?? 20);
const NEW_MIB = Number(process.env.SNAPSHOT_BENCH_MIB ?? 100);

const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
process.stdout.on('error', () => {});

const p = await startPlatform({ prefix: 'sbn', subnetBase: '10.251' });
const call = apiCaller(p);
const create = (template = 'minimal') => call('POST', '/v1/capsules', { template, memory_mb: 256 });
const destroy = (id) => call('DELETE', `/v1/capsules/${id}`);
const sh = async (id, script) => {
  const r = await call('POST', `/v1/capsules/${id}/exec`, { cmd: '/bin/sh', args: ['-c', script], timeout_sec: 300 });
  if (r.exit_code !== 0) throw new Error(`exec failed: ${JSON.stringify(r)}`);
  return r.stdout;
};
async function snapshot(id, name) {
  const t = performance.now();
  const tpl = await call('POST', '/v1/snapshots', { sandbox_id: id, name });
  return { ms: performance.now() - t, size: tpl.size_bytes };
}

try {
  const fresh = await create();
  const base = await snapshot(fresh.id, 'bench-fresh');
  await destroy(fresh.id);
  console.log(`snapshot of a fresh capsule: ${fmt(base.ms)}, template ${mib(base.size)}`);

  const c = await create();
  // Random data (incompressible, no holes), in files of 10 MiB like a real workload's.
  await sh(
    c.id,
    `mkdir -p /root/data && for i in $(seq 1 ${NEW_MIB / 10}); do head -c 10M /dev/urandom > /root/data/f$i; done`,
  );
  const full = await snapshot(c.id, 'bench-data');
  await destroy(c.id);
  console.log(
    `snapshot with ${NEW_MIB} MiB of new files: ${fmt(full.ms)}, template ${mib(full.size)} ` +
      `(+${mib(full.size - base.size)} over the fresh one)`,
  );

  // Warm-up: the first create from a template pays for its page cache.
  await destroy((await create('bench-data')).id);
  const creates = [];
  for (let i = 0; i < CREATES; i++) {
    const t = performance.now();
    const x = await create('bench-data');
    creates.push(performance.now() - t);
    if (x.status !== 'running') throw new Error(`created capsule is ${x.status}`);
    await destroy(x.id);
  }
  console.log(
    `create from the snapshot (${CREATES} sequential): p50 ${fmt(pct(creates, 50))}, p95 ${fmt(pct(creates, 95))}`,
  );
  await call('DELETE', '/v1/snapshots/bench-data');
  await call('DELETE', '/v1/snapshots/bench-fresh');
} finally {
  await p.stop();
}
