// Unit tests of the metrics ring buffers, tiers, ranges and sampler, driven
// by an in-test clock and an in-test stats source (pure logic only; the
// agent tests cover sampling real capsules).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CapsuleMetrics,
  LONG_CAPACITY,
  MID_CAPACITY,
  MetricsSampler,
  RAW_CAPACITY,
  RAW_PER_MID,
  MID_PER_LONG,
  Ring,
  cpuPercent,
  isMetricRange,
  type MetricSample,
} from '../src/metrics.js';
import type { CapsuleStats } from '../src/runtime/types.js';

const sample = (ts: number, cpuPct = 0, memBytes = 0, diskBytes = 0): MetricSample => ({
  ts,
  cpuPct,
  memBytes,
  diskBytes,
});

test('ring keeps the newest `capacity` entries, oldest first', () => {
  const r = new Ring<number>(3);
  assert.deepEqual(r.toArray(), []);
  for (let i = 1; i <= 5; i++) r.push(i);
  assert.equal(r.length, 3);
  assert.deepEqual(r.toArray(), [3, 4, 5]);
  r.clear();
  assert.equal(r.length, 0);
  r.push(9);
  assert.deepEqual(r.toArray(), [9]);
});

test('tiers: 60 raw samples make one 30 s average, 10 of those one 5 min average', () => {
  const m = new CapsuleMetrics();
  const t0 = 1_000_000;
  for (let i = 0; i < RAW_PER_MID * MID_PER_LONG; i++) {
    // cpu alternates 0/100 so each average is 50; memory grows by 1 per sample.
    m.add(sample(t0 + i * 500, i % 2 ? 100 : 0, i, 1000));
  }
  const mid = m.mid.toArray();
  assert.equal(mid.length, MID_PER_LONG);
  assert.equal(mid[0]!.cpuPct, 50);
  assert.equal(mid[0]!.ts, t0 + (RAW_PER_MID - 1) * 500, 'an average carries its last sample time');
  assert.equal(mid[0]!.memBytes, Math.round((0 + 59) / 2));
  assert.equal(mid[0]!.diskBytes, 1000);
  const long = m.long.toArray();
  assert.equal(long.length, 1);
  assert.equal(long[0]!.cpuPct, 50);
  assert.equal(long[0]!.ts, mid[mid.length - 1]!.ts);
  assert.equal(m.raw.length, RAW_PER_MID * MID_PER_LONG);
});

test('tiers are bounded: 10 min raw, 2 h of 30 s, 24 h of 5 min', () => {
  const m = new CapsuleMetrics();
  const n = RAW_PER_MID * MID_PER_LONG * (LONG_CAPACITY + 5);
  for (let i = 0; i < n; i++) m.add(sample(i * 500));
  assert.equal(m.raw.length, RAW_CAPACITY);
  assert.equal(m.mid.length, MID_CAPACITY);
  assert.equal(m.long.length, LONG_CAPACITY);
  // The newest raw point is the last sample added.
  assert.equal(m.raw.toArray().at(-1)!.ts, (n - 1) * 500);
});

test('ranges pick their tier and cut off by time', () => {
  const m = new CapsuleMetrics();
  const start = 10_000_000;
  // 3 hours of samples every 500 ms.
  const n = (3 * 3600 * 1000) / 500;
  for (let i = 0; i < n; i++) m.add(sample(start + i * 500));
  const now = start + (n - 1) * 500;
  const p5 = m.query('5m', now);
  assert.equal(p5.length, 601, '5 minutes of 500 ms points, both ends included');
  assert.ok(p5.every((p) => p.ts >= now - 5 * 60_000));
  assert.equal(m.query('10m', now).length, RAW_CAPACITY);
  const h1 = m.query('1h', now);
  assert.equal(h1.length, 121, 'one hour of 30 s points, both ends included');
  assert.ok(h1.every((p) => now - p.ts <= 3_600_000));
  assert.equal(m.query('2h', now).length, MID_CAPACITY);
  const h6 = m.query('6h', now);
  assert.equal(h6.length, 36, 'three hours of 5 min points');
  assert.deepEqual(m.query('24h', now), h6);
  assert.deepEqual(m.query('12h', now), h6);
});

test('flush returns every tier and leaves them (and partial averages) empty', () => {
  const m = new CapsuleMetrics();
  for (let i = 0; i < RAW_PER_MID + 10; i++) m.add(sample(i * 500, 10));
  const f = m.flush();
  assert.equal(f.raw.length, RAW_PER_MID + 10);
  assert.equal(f.mid.length, 1);
  assert.equal(f.long.length, 0);
  assert.equal(m.raw.length + m.mid.length + m.long.length, 0);
  // The 10 samples after the last average were dropped too: 59 more do not make an average.
  for (let i = 0; i < RAW_PER_MID - 1; i++) m.add(sample(i * 500));
  assert.equal(m.mid.length, 0);
  m.add(sample(99_999));
  assert.equal(m.mid.length, 1);
});

test('cpuPercent divides by wall time and vCPUs and clamps to 0..100', () => {
  assert.equal(cpuPercent(250e6, 500, 1), 50);
  assert.equal(cpuPercent(500e6, 500, 2), 50);
  assert.equal(cpuPercent(2e9, 500, 1), 100);
  assert.equal(cpuPercent(-5, 500, 1), 0);
  assert.equal(cpuPercent(10, 0, 1), 0);
  assert.equal(cpuPercent(10, 500, 0), 0);
});

test('range names', () => {
  for (const r of ['5m', '10m', '1h', '2h', '6h', '12h', '24h']) assert.ok(isMetricRange(r));
  for (const r of ['', '1m', '3h', '5M', '24h ']) assert.ok(!isMetricRange(r));
});

test('sampler: rates from cumulative CPU time; untracked capsules are not sampled', async () => {
  let now = 1_000_000;
  const stats = new Map<string, CapsuleStats>();
  const calls: string[] = [];
  const errors: string[] = [];
  const s = new MetricsSampler({
    now: () => now,
    stats: async (id) => {
      calls.push(id);
      const st = stats.get(id);
      if (!st) throw new Error('gone');
      return { ...st };
    },
    onError: (id) => errors.push(id),
  });
  stats.set('a', { cpuNs: 0, memoryBytes: 100, diskBytes: 7 });
  stats.set('b', { cpuNs: 0, memoryBytes: 200, diskBytes: 8 });
  s.track('a', 1);
  s.track('b', 2);
  await s.sampleOnce(); // first reading: no rate yet
  assert.equal(s.store('a')!.raw.length, 0);
  now += 500;
  stats.get('a')!.cpuNs = 250e6; // half of one CPU
  stats.get('b')!.cpuNs = 1e9; // all of two CPUs
  await s.sampleOnce();
  assert.deepEqual(s.store('a')!.raw.toArray(), [sample(now, 50, 100, 7)]);
  assert.equal(s.store('b')!.raw.toArray()[0]!.cpuPct, 100);

  // Paused: no samples, points kept.
  s.untrack('a');
  calls.length = 0;
  now += 500;
  await s.sampleOnce();
  assert.deepEqual(calls, ['b']);
  assert.equal(s.store('a')!.raw.length, 1);

  // Resumed: the first reading after resume only sets the baseline (no bogus rate across the pause).
  s.track('a', 1);
  now += 10_000;
  stats.get('a')!.cpuNs = 9e9;
  await s.sampleOnce();
  assert.equal(s.store('a')!.raw.length, 1);
  now += 500;
  stats.get('a')!.cpuNs = 9e9 + 125e6;
  await s.sampleOnce();
  assert.equal(s.store('a')!.raw.toArray().at(-1)!.cpuPct, 25);

  // A failing stats read is reported, not thrown.
  stats.delete('b');
  await s.sampleOnce();
  assert.deepEqual(errors, ['b']);

  s.remove('a');
  assert.equal(s.store('a'), undefined);
  assert.equal(s.isTracked('a'), false);
});

test('sampler: one shared timer drives every capsule', async () => {
  let reads = 0;
  const s = new MetricsSampler({
    intervalMs: 10,
    stats: async () => {
      reads++;
      return { cpuNs: reads * 1e6, memoryBytes: 1, diskBytes: 1 };
    },
  });
  for (let i = 0; i < 5; i++) s.track(`c${i}`, 1);
  s.start();
  s.start(); // idempotent: still one timer
  await new Promise((r) => setTimeout(r, 100));
  s.stop();
  const after = reads;
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(reads, after, 'no reads after stop');
  assert.ok(after >= 10 && after % 5 === 0, `every tick reads all 5 capsules (${after} reads)`);
  for (let i = 0; i < 5; i++) assert.ok(s.store(`c${i}`)!.raw.length >= 1);
});
