// Picks the host for a new capsule. Platform teams schedule onto `regular`
// hosts; BYOC teams onto their own hosts only.
//
// Capacity: a container capsule's memory and CPU are limits, not reservations
// (an idle capsule costs ~8 MiB and no CPU), so hosts admit reservations up to
// an overcommit factor of their real size: memory ×4 and disk ×4 (sparse
// images), vCPUs ×64 (CPU is time-shared; a 2-core host holds hundreds of
// idle capsules). Paused capsules keep their memory (the cgroup is frozen, not
// swapped out) but use no CPU.
import { sql, type Kysely } from 'kysely';
import type { DB, HostRow } from '../db/schema.js';

export interface PlacementRequest {
  teamId: string;
  /** True when the team runs its capsules on its own (BYOC) hosts. */
  byoc: boolean;
  vcpus: number;
  memoryMb: number;
  diskSizeMb: number;
}

export interface Scheduler {
  /** An online host able to take the capsule, or null when there is none. */
  pick(request: PlacementRequest): Promise<HostRow | null>;
}

export interface Overcommit {
  memory: number;
  cpu: number;
  disk: number;
}

export const DEFAULT_OVERCOMMIT: Overcommit = { memory: 4, cpu: 64, disk: 4 };

export interface HostLoad {
  host: HostRow;
  vcpus: number;
  memoryMb: number;
  diskMb: number;
}

/** Online hosts of the right kind with an address, and what their live capsules reserve. */
export async function candidateHosts(db: Kysely<DB>, request: PlacementRequest): Promise<HostLoad[]> {
  let q = db.selectFrom('hosts').selectAll().where('status', '=', 'online').where('address', '!=', '');
  q = request.byoc
    ? q.where('type', '=', 'byoc').where('team_id', '=', request.teamId)
    : q.where('type', '=', 'regular');
  const hosts = await q.orderBy('created_at').orderBy('id').execute();
  if (hosts.length === 0) return [];
  const usage = await db
    .selectFrom('sandboxes')
    .select([
      'host_id',
      sql<number>`coalesce(sum(case when status = 'paused' then 0 else vcpus end), 0)::int`.as('vcpus'),
      sql<number>`coalesce(sum(memory_mb), 0)::int`.as('memory_mb'),
      sql<number>`coalesce(sum(disk_size_mb), 0)::int`.as('disk_mb'),
    ])
    .where(
      'host_id',
      'in',
      hosts.map((h) => h.id),
    )
    .where('status', 'in', ['pending', 'starting', 'running', 'paused', 'missing'])
    .groupBy('host_id')
    .execute();
  const byHost = new Map(usage.map((u) => [u.host_id, u]));
  return hosts.map((host) => {
    const u = byHost.get(host.id);
    return { host, vcpus: u?.vcpus ?? 0, memoryMb: u?.memory_mb ?? 0, diskMb: u?.disk_mb ?? 0 };
  });
}

/** Free fraction of the host's tightest resource after placing the request, or null when it does not fit. */
export function headroom(
  load: HostLoad,
  request: PlacementRequest,
  over: Overcommit = DEFAULT_OVERCOMMIT,
): number | null {
  const cap = {
    memory: load.host.memory_mb * over.memory,
    cpu: load.host.cpu_cores * over.cpu,
    disk: load.host.disk_gb * 1024 * over.disk,
  };
  const after = {
    memory: load.memoryMb + request.memoryMb,
    cpu: load.vcpus + request.vcpus,
    disk: load.diskMb + request.diskSizeMb,
  };
  if (after.memory > cap.memory || after.cpu > cap.cpu || after.disk > cap.disk) return null;
  return Math.min(1 - after.memory / cap.memory, 1 - after.cpu / cap.cpu, 1 - after.disk / cap.disk);
}

/** The host with the most headroom on its tightest resource (bottleneck first). */
export class LeastLoadedScheduler implements Scheduler {
  constructor(
    private readonly db: Kysely<DB>,
    private readonly overcommit: Overcommit = DEFAULT_OVERCOMMIT,
  ) {}

  async pick(request: PlacementRequest): Promise<HostRow | null> {
    let best: { host: HostRow; score: number } | null = null;
    for (const load of await candidateHosts(this.db, request)) {
      const score = headroom(load, request, this.overcommit);
      if (score !== null && (best === null || score > best.score)) best = { host: load.host, score };
    }
    return best?.host ?? null;
  }
}

/** Each fitting host in turn (per control plane process). */
export class RoundRobinScheduler implements Scheduler {
  private next = 0;

  constructor(
    private readonly db: Kysely<DB>,
    private readonly overcommit: Overcommit = DEFAULT_OVERCOMMIT,
  ) {}

  async pick(request: PlacementRequest): Promise<HostRow | null> {
    const fitting = (await candidateHosts(this.db, request)).filter(
      (load) => headroom(load, request, this.overcommit) !== null,
    );
    if (fitting.length === 0) return null;
    const host = fitting[this.next % fitting.length]!.host;
    this.next = (this.next + 1) % 1_000_000;
    return host;
  }
}
