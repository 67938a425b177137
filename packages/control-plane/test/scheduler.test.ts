// Scheduler: which online host takes a new capsule (least-loaded by the
// tightest resource, round-robin), BYOC teams only on their own hosts.
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { openTestDatabase } from './helpers.js';
import type { Database } from '../src/db/connect.js';
import { LeastLoadedScheduler, RoundRobinScheduler, headroom, type PlacementRequest } from '../src/hosts/scheduler.js';

describe('scheduler', () => {
  let database: Database;
  let cleanup: () => Promise<void>;
  let teamId: string;
  let byocTeamId: string;

  before(async () => {
    ({ database, cleanup } = await openTestDatabase('postgres'));
    const db = database.db;
    teamId = (
      await db
        .insertInto('teams')
        .values({ name: 'A', slug: 'aaaaaa-aaaaaa' })
        .returning('id')
        .executeTakeFirstOrThrow()
    ).id;
    byocTeamId = (
      await db
        .insertInto('teams')
        .values({ name: 'B', slug: 'bbbbbb-bbbbbb', is_byoc: true })
        .returning('id')
        .executeTakeFirstOrThrow()
    ).id;
  });

  after(async () => {
    await cleanup();
  });

  beforeEach(async () => {
    await database.db.deleteFrom('sandboxes').execute();
    await database.db.deleteFrom('hosts').execute();
  });

  async function host(opts: { memoryMb?: number; cores?: number; status?: 'online' | 'unreachable'; team?: string }) {
    return (
      await database.db
        .insertInto('hosts')
        .values({
          type: opts.team ? 'byoc' : 'regular',
          team_id: opts.team ?? null,
          status: opts.status ?? 'online',
          address: '127.0.0.1:1',
          cpu_cores: opts.cores ?? 2,
          memory_mb: opts.memoryMb ?? 4096,
          disk_gb: 100,
          metadata: '{}',
        })
        .returning('id')
        .executeTakeFirstOrThrow()
    ).id;
  }

  async function capsules(hostId: string, n: number, memoryMb: number, status: 'running' | 'paused' | 'stopped') {
    for (let i = 0; i < n; i++) {
      await database.db
        .insertInto('sandboxes')
        .values({ team_id: teamId, host_id: hostId, status, memory_mb: memoryMb, metadata: '{}' })
        .execute();
    }
  }

  const req = (over: Partial<PlacementRequest> = {}): PlacementRequest => ({
    teamId,
    byoc: false,
    vcpus: 1,
    memoryMb: 512,
    diskSizeMb: 1024,
    ...over,
  });

  it('picks the host with the most headroom on its tightest resource, ignoring stopped capsules', async () => {
    const busy = await host({});
    const idle = await host({});
    await capsules(busy, 10, 1024, 'running');
    await capsules(idle, 30, 1024, 'stopped');
    const s = new LeastLoadedScheduler(database.db);
    assert.equal((await s.pick(req()))?.id, idle);
    // Paused capsules keep their memory.
    await capsules(idle, 12, 1024, 'paused');
    assert.equal((await s.pick(req()))?.id, busy);
  });

  it('skips hosts that are not online or have no room, and says so with null', async () => {
    const down = await host({ status: 'unreachable' });
    const small = await host({ memoryMb: 1024 });
    const s = new LeastLoadedScheduler(database.db);
    assert.equal((await s.pick(req()))?.id, small);
    // 1024 MB × 4 overcommit = 4096 MB reservable.
    await capsules(small, 8, 512, 'running');
    assert.equal(await s.pick(req()), null);
    assert.ok(down);
  });

  it('keeps BYOC teams on their own hosts and everyone else off them', async () => {
    const platform = await host({});
    const own = await host({ team: byocTeamId });
    const s = new LeastLoadedScheduler(database.db);
    assert.equal((await s.pick(req({ teamId: byocTeamId, byoc: true })))?.id, own);
    assert.equal((await s.pick(req()))?.id, platform);
    assert.equal(await s.pick(req({ teamId, byoc: true })), null, 'a BYOC team without hosts gets none');
  });

  it('round-robin visits every fitting host in turn', async () => {
    const a = await host({});
    const b = await host({});
    const s = new RoundRobinScheduler(database.db);
    const picks = [];
    for (let i = 0; i < 4; i++) picks.push((await s.pick(req()))?.id);
    assert.deepEqual(picks, [a, b, a, b]);
  });

  it('headroom is the free fraction of the tightest resource', () => {
    const load = {
      host: { memory_mb: 1000, cpu_cores: 1, disk_gb: 1 } as never,
      vcpus: 0,
      memoryMb: 2000,
      diskMb: 0,
    };
    // memory: (2000 + 1000) / 4000 used → 0.25 free; cpu and disk freer.
    assert.equal(headroom(load, req({ memoryMb: 1000, diskSizeMb: 0, vcpus: 1 })), 0.25);
    assert.equal(headroom(load, req({ memoryMb: 2001, diskSizeMb: 0 })), null);
  });
});
