// Unit tests of the TTL reaper's logic with an in-test clock (the agent
// tests cover auto-pause of real capsules end to end).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TtlReaper, selectIdle, type ReapCandidate } from '../src/reaper.js';

const cand = (id: string, over: Partial<ReapCandidate> = {}): ReapCandidate => ({
  id,
  state: 'running',
  timeoutSec: 10,
  lastActiveAt: 0,
  busy: 0,
  ...over,
});

test('selectIdle: only running, timed, idle, not busy capsules past their timeout', () => {
  const list = [
    cand('idle'),
    cand('fresh', { lastActiveAt: 5_000 }),
    cand('exactly', { lastActiveAt: 1_000 }), // idle exactly 10 s: not yet
    cand('no-timeout', { timeoutSec: 0 }),
    cand('paused', { state: 'paused' }),
    cand('busy', { busy: 1 }),
  ];
  assert.deepEqual(selectIdle(list, 11_000), ['idle']);
  assert.deepEqual(selectIdle(list, 11_001), ['idle', 'exactly']);
});

function harness(opts: { pauseFails?: Set<string>; destroyFails?: Set<string> } = {}) {
  let now = 0;
  const caps = new Map<string, ReapCandidate>();
  const events: string[] = [];
  const warnings: string[] = [];
  const reaper = new TtlReaper(
    {
      candidates: () => caps.values(),
      pauseIfIdle: async (id) => {
        if (opts.pauseFails?.has(id)) throw new Error('pause failed');
        const c = caps.get(id)!;
        // Re-checked under the lock: activity may have raced in.
        if (now - c.lastActiveAt <= c.timeoutSec * 1000) return false;
        c.state = 'paused';
        events.push(`pause ${id}`);
        return true;
      },
      destroy: async (id) => {
        if (opts.destroyFails?.has(id)) throw new Error('destroy failed');
        caps.delete(id);
        events.push(`destroy ${id}`);
      },
      onAutoPaused: (id) => events.push(`auto ${id}`),
      log: {
        warn: (_o, msg) => warnings.push(msg),
        error: (_o, msg) => warnings.push(msg),
      },
    },
    () => now,
  );
  return {
    reaper,
    caps,
    events,
    warnings,
    setNow: (t: number) => {
      now = t;
    },
  };
}

test('reaper pauses idle capsules and reports them once', async () => {
  const h = harness();
  h.caps.set('a', cand('a', { timeoutSec: 2 }));
  h.caps.set('b', cand('b', { timeoutSec: 5 }));
  h.setNow(2_500);
  await h.reaper.reapOnce();
  assert.deepEqual(h.events, ['pause a', 'auto a']);
  h.setNow(6_000);
  await h.reaper.reapOnce();
  assert.deepEqual(h.events, ['pause a', 'auto a', 'pause b', 'auto b'], 'a, now paused, is not paused again');
});

test('activity (a ping) resets the timer', async () => {
  const h = harness();
  h.caps.set('a', cand('a', { timeoutSec: 2 }));
  h.setNow(1_500);
  h.caps.get('a')!.lastActiveAt = 1_500; // ping
  h.setNow(3_000);
  await h.reaper.reapOnce();
  assert.deepEqual(h.events, []);
  h.setNow(3_600);
  await h.reaper.reapOnce();
  assert.deepEqual(h.events, ['pause a', 'auto a']);
});

test('a failed pause destroys the capsule; a failed destroy is logged, others go on', async () => {
  const h = harness({ pauseFails: new Set(['x', 'y']), destroyFails: new Set(['y']) });
  h.caps.set('x', cand('x'));
  h.caps.set('y', cand('y'));
  h.caps.set('z', cand('z'));
  h.setNow(20_000);
  await h.reaper.reapOnce();
  assert.deepEqual(h.events.sort(), ['auto z', 'destroy x', 'pause z']);
  assert.equal(h.caps.has('x'), false);
  assert.equal(h.caps.has('y'), true);
  assert.equal(h.warnings.filter((w) => w.includes('destroy after failed auto-pause failed')).length, 1);
});

test('the timer runs passes until stopped', async () => {
  let passes = 0;
  const reaper = new TtlReaper(
    {
      candidates: () => {
        passes++;
        return [];
      },
      pauseIfIdle: async () => false,
      destroy: async () => {},
      onAutoPaused: () => {},
      log: { warn: () => {}, error: () => {} },
    },
    Date.now,
    10,
  );
  reaper.start();
  await new Promise((r) => setTimeout(r, 80));
  await reaper.stop();
  const after = passes;
  assert.ok(after >= 3, `${after} passes`);
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(passes, after);
});
