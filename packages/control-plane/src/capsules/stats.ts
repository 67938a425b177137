// Team capsule usage: a sampler writes one sandbox_metrics_snapshots row per
// team every 10 s, and GET /v1/capsules/stats reads the live figures, 30-day
// peaks and a bucketed series from them.
//
// Reserved resources: running and starting capsules count in full; paused
// ones keep half their memory (rounded up) and no CPU.
import { sql, type Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { DB } from '../db/schema.js';
import type { StatsRange } from './schemas.js';
import { PeriodicTask } from '../periodic.js';

export const STATS_SAMPLE_INTERVAL_MS = 10_000;
const RETENTION_DAYS = 60;

/** Window and bucket width (seconds) of each range. */
const RANGE_SECONDS: Record<StatsRange, { window: number; bucket: number }> = {
  '5m': { window: 300, bucket: 10 },
  '1h': { window: 3600, bucket: 30 },
  '6h': { window: 6 * 3600, bucket: 180 },
  '24h': { window: 24 * 3600, bucket: 720 },
  '30d': { window: 30 * 86400, bucket: 21600 },
};

interface Usage {
  team_id: string;
  running_count: number;
  vcpus_reserved: number;
  memory_mb_reserved: number;
}

const usageColumns = [
  sql<number>`count(*) filter (where status in ('running', 'starting'))::int`.as('running_count'),
  sql<number>`coalesce(sum(vcpus) filter (where status in ('running', 'starting')), 0)::int`.as('vcpus_reserved'),
  sql<number>`(coalesce(sum(memory_mb) filter (where status in ('running', 'starting')), 0)
    + coalesce(sum(ceil(memory_mb / 2.0)) filter (where status = 'paused'), 0))::int`.as('memory_mb_reserved'),
] as const;

/** Live usage of every team with a capsule that reserves something. */
async function liveUsage(db: Kysely<DB>, teamId?: string): Promise<Usage[]> {
  let q = db
    .selectFrom('sandboxes')
    .select('team_id')
    .select(usageColumns)
    .where('status', 'in', ['running', 'starting', 'paused'])
    .groupBy('team_id');
  if (teamId) q = q.where('team_id', '=', teamId);
  return q.execute();
}

export class CapsuleStatsSampler {
  private readonly task: PeriodicTask;

  constructor(
    private readonly db: Kysely<DB>,
    log: Logger,
    intervalMs = STATS_SAMPLE_INTERVAL_MS,
  ) {
    this.task = new PeriodicTask('capsule stats sample', intervalMs, () => this.sampleOnce(), log);
  }

  start(): void {
    this.task.start();
  }

  stop(): Promise<void> {
    return this.task.stop();
  }

  /** One row per team using something now, and a zero row for teams whose last sample was not zero. */
  async sampleOnce(): Promise<void> {
    const now = new Date();
    const usage = await liveUsage(this.db);
    const active = new Set(usage.map((u) => u.team_id));
    // Teams that just went idle get one zero sample, so their series drops to zero.
    const wentIdle = await sql<{ team_id: string }>`
      SELECT DISTINCT ON (team_id) team_id, running_count, memory_mb_reserved
      FROM sandbox_metrics_snapshots
      WHERE sampled_at > ${new Date(now.getTime() - RETENTION_DAYS * 86400_000)}
      ORDER BY team_id, sampled_at DESC`
      .execute(this.db)
      .then((r) =>
        (r.rows as unknown as { team_id: string; running_count: number; memory_mb_reserved: number }[]).filter(
          (x) => !active.has(x.team_id) && (x.running_count > 0 || x.memory_mb_reserved > 0),
        ),
      );
    const rows = [
      ...usage,
      ...wentIdle.map((t) => ({ team_id: t.team_id, running_count: 0, vcpus_reserved: 0, memory_mb_reserved: 0 })),
    ].map((u) => ({ ...u, sampled_at: now }));
    if (rows.length > 0) await this.db.insertInto('sandbox_metrics_snapshots').values(rows).execute();
    await this.db
      .deleteFrom('sandbox_metrics_snapshots')
      .where('sampled_at', '<', new Date(now.getTime() - RETENTION_DAYS * 86400_000))
      .execute();
  }
}

export async function teamStats(db: Kysely<DB>, teamId: string, range: StatsRange) {
  const now = new Date();
  const [live] = await liveUsage(db, teamId);
  const current = {
    running_count: live?.running_count ?? 0,
    vcpus_reserved: live?.vcpus_reserved ?? 0,
    memory_mb_reserved: live?.memory_mb_reserved ?? 0,
    sampled_at: now.toISOString(),
  };
  const peak = await db
    .selectFrom('sandbox_metrics_snapshots')
    .select([
      sql<number>`coalesce(max(running_count), 0)::int`.as('running_count'),
      sql<number>`coalesce(max(vcpus_reserved), 0)::int`.as('vcpus'),
      sql<number>`coalesce(max(memory_mb_reserved), 0)::int`.as('memory_mb'),
    ])
    .where('team_id', '=', teamId)
    .where('sampled_at', '>', new Date(now.getTime() - 30 * 86400_000))
    .executeTakeFirstOrThrow();
  const { window, bucket } = RANGE_SECONDS[range];
  const series = await sql<{ bucket: number; running: number; vcpus: number; memory_mb: number }>`
    SELECT (floor(extract(epoch FROM sampled_at) / ${bucket}) * ${bucket})::bigint AS bucket,
           max(running_count)::int AS running, max(vcpus_reserved)::int AS vcpus,
           max(memory_mb_reserved)::int AS memory_mb
    FROM sandbox_metrics_snapshots
    WHERE team_id = ${teamId} AND sampled_at > ${new Date(now.getTime() - window * 1000)}
    GROUP BY 1 ORDER BY 1`.execute(db);
  return {
    range,
    current,
    peaks: {
      running_count: Math.max(peak.running_count, current.running_count),
      vcpus: Math.max(peak.vcpus, current.vcpus_reserved),
      memory_mb: Math.max(peak.memory_mb, current.memory_mb_reserved),
    },
    series: {
      labels: series.rows.map((r) => new Date(Number(r.bucket) * 1000).toISOString()),
      running: series.rows.map((r) => r.running),
      vcpus: series.rows.map((r) => r.vcpus),
      memory_mb: series.rows.map((r) => r.memory_mb),
    },
  };
}
