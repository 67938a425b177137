// Capsule lifecycle on top of the database and the host agents.
//
// Every state change is a compare-and-set (`UPDATE … WHERE status = <what we
// saw>`), so concurrent requests (pause vs destroy, two resumes) and the host
// monitor cannot overwrite each other: the loser re-reads and reports the
// state it found. The host agent serialises lifecycle calls per capsule.
import { formatId } from '@wrenn/contracts';
import { sql, type Kysely } from 'kysely';
import type { Logger } from 'pino';
import { Code } from '@connectrpc/connect';
import type { MetricPoint } from '@wrenn/contracts/gen/hostagent/v1/hostagent_pb';
import type { AuditActor, AuditLogger } from '../audit/logger.js';
import type { CapsuleStatus, DB, HostRow, MetricTier, SandboxRow } from '../db/schema.js';
import { ApiError, conflict, notFound, parseIdParam } from '../errors.js';
import type { HostAgentClient, HostClientPool } from '../hosts/pool.js';
import { candidateHosts, headroom, type PlacementRequest, type Scheduler } from '../hosts/scheduler.js';
import { resolveTemplate } from '../templates/store.js';
import { agentError, connectCode, hostUnreachable } from './agent-errors.js';
import { DEFAULTS, type CreateCapsuleBody } from './schemas.js';

/** How long the control plane waits for the agent's lifecycle calls (create waits for envd). */
const CREATE_TIMEOUT_MS = 180_000;
const LIFECYCLE_TIMEOUT_MS = 60_000;
const SHORT_TIMEOUT_MS = 15_000;
const TOUCH_INTERVAL_MS = 5_000;

export type CapsuleJson = {
  id: string;
  status: CapsuleStatus;
  template: string;
  vcpus: number;
  memory_mb: number;
  disk_size_mb: number;
  timeout_sec: number;
  guest_ip: string;
  host_ip: string;
  created_at: string;
  started_at: string | null;
  last_active_at: string | null;
  last_updated: string;
  metadata: Record<string, string>;
  error?: string;
};

export function capsuleJson(r: SandboxRow): CapsuleJson {
  return {
    id: formatId('capsule', r.id),
    status: r.status,
    template: r.template,
    vcpus: r.vcpus,
    memory_mb: r.memory_mb,
    disk_size_mb: r.disk_size_mb,
    timeout_sec: r.timeout_sec,
    guest_ip: '',
    host_ip: r.host_ip,
    created_at: r.created_at.toISOString(),
    started_at: r.started_at?.toISOString() ?? null,
    last_active_at: r.last_active_at?.toISOString() ?? null,
    last_updated: r.last_updated.toISOString(),
    metadata: (r.metadata ?? {}) as Record<string, string>,
    ...(r.status === 'error' ? { error: r.error } : {}),
  };
}

/** A running capsule with the client of the agent that runs it. */
export interface LiveCapsule {
  row: SandboxRow;
  host: HostRow;
  client: HostAgentClient;
  /** The capsule id on the wire (and in agent RPCs). */
  wireId: string;
}

export interface CapsuleServiceDeps {
  db: Kysely<DB>;
  hosts: HostClientPool;
  audit: AuditLogger;
  scheduler: Scheduler;
  log: Logger;
}

function stateMessage(wireId: string, status: CapsuleStatus): string {
  switch (status) {
    case 'paused':
      return `capsule ${wireId} is paused; resume it first`;
    case 'missing':
      return `capsule ${wireId} is missing: its host is unreachable`;
    case 'error':
      return `capsule ${wireId} failed to start (state error)`;
    case 'pending':
    case 'starting':
      return `capsule ${wireId} is still starting (state ${status})`;
    default:
      return `capsule ${wireId} is ${status}, not running`;
  }
}

export class CapsuleService {
  /** When each capsule's activity was last written (touch throttling). */
  private readonly touched = new Map<string, number>();

  constructor(private readonly deps: CapsuleServiceDeps) {}

  /** The team's capsule (any state); another team's or an unknown id is a 404. */
  async get(teamId: string, wireId: unknown): Promise<SandboxRow> {
    const id = parseIdParam('capsule', wireId, 'id');
    const row = await this.deps.db
      .selectFrom('sandboxes')
      .selectAll()
      .where('id', '=', id)
      .where('team_id', '=', teamId)
      .executeTakeFirst();
    if (!row) throw notFound(`capsule ${String(wireId)} not found`, 'capsule_not_found');
    return row;
  }

  /** The team's capsule, which must be running or paused: a 409 says which capsules `can` do what was asked. */
  async runningOrPaused(teamId: string, wireId: unknown, can: string): Promise<SandboxRow> {
    const row = await this.get(teamId, wireId);
    if (row.status !== 'running' && row.status !== 'paused') {
      const id = formatId('capsule', row.id);
      throw new ApiError(
        409,
        'invalid_state',
        `capsule ${id} is ${row.status}; only running or paused capsules ${can}`,
      );
    }
    return row;
  }

  /** The team's capsule, which must be running (409 with its state otherwise), and its agent. */
  async running(teamId: string, wireId: unknown): Promise<LiveCapsule> {
    const row = await this.get(teamId, wireId);
    const id = formatId('capsule', row.id);
    if (row.status !== 'running') throw new ApiError(409, 'invalid_state', stateMessage(id, row.status));
    return this.live(row);
  }

  /**
   * One host agent call for the team's running capsule: agent failures become API errors,
   * and the capsule's activity is recorded.
   */
  async onRunning<T>(teamId: string, wireId: unknown, call: (live: LiveCapsule) => Promise<T>): Promise<T> {
    return this.onLive(await this.running(teamId, wireId), call);
  }

  /** As onRunning, for a capsule already looked up. */
  async onLive<T>(live: LiveCapsule, call: (live: LiveCapsule) => Promise<T>): Promise<T> {
    try {
      return await call(live);
    } catch (err) {
      throw agentError(err, live.host.id);
    } finally {
      void this.touch(live.row.id);
    }
  }

  /** The agent of a capsule's host (whatever the capsule's state). */
  async live(row: SandboxRow): Promise<LiveCapsule> {
    const host = await this.hostOf(row);
    return { row, host, client: this.deps.hosts.get(host), wireId: formatId('capsule', row.id) };
  }

  async hostOf(row: SandboxRow): Promise<HostRow> {
    const host = row.host_id
      ? await this.deps.db.selectFrom('hosts').selectAll().where('id', '=', row.host_id).executeTakeFirst()
      : undefined;
    if (!host)
      throw new ApiError(
        503,
        'host_unavailable',
        `the host of capsule ${formatId('capsule', row.id)} no longer exists`,
      );
    if (host.status === 'unreachable' || host.status === 'offline' || !host.address) throw hostUnreachable(host.id);
    return host;
  }

  /**
   * Records activity (exec, files, terminals): last_active_at of a running capsule. At most one
   * write per capsule every few seconds, off the request's path: a busy capsule must not pay a
   * database write per command.
   */
  touch(id: string): Promise<void> {
    const now = Date.now();
    if (now - (this.touched.get(id) ?? 0) < TOUCH_INTERVAL_MS) return Promise.resolve();
    if (this.touched.size > 50_000) this.touched.clear();
    this.touched.set(id, now);
    void this.writeActivity(id);
    return Promise.resolve();
  }

  private async writeActivity(id: string): Promise<void> {
    await this.deps.db
      .updateTable('sandboxes')
      .set({ last_active_at: new Date() })
      .where('id', '=', id)
      .where('status', '=', 'running')
      .execute()
      .catch((err: unknown) => this.deps.log.warn({ err }, 'capsules: recording activity failed'));
  }

  /** Compare-and-set of the status; returns the updated row, or null when the status was not `from`. */
  private async transition(
    id: string,
    from: CapsuleStatus | CapsuleStatus[],
    set: Partial<Omit<SandboxRow, 'id' | 'metadata' | 'agent_metadata' | 'created_at'>> & {
      status: CapsuleStatus;
      agent_metadata?: string;
    },
  ): Promise<SandboxRow | null> {
    const froms = Array.isArray(from) ? from : [from];
    const row = await this.deps.db
      .updateTable('sandboxes')
      .set({ ...set, last_updated: new Date() })
      .where('id', '=', id)
      .where('status', 'in', froms)
      .returningAll()
      .executeTakeFirst();
    return row ?? null;
  }

  private async reread(id: string): Promise<SandboxRow> {
    return this.deps.db.selectFrom('sandboxes').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  }

  // ------------------------------------------------------------------ create

  async create(teamId: string, actor: AuditActor, body: CreateCapsuleBody): Promise<SandboxRow> {
    const { db, audit, log } = this.deps;
    const template = body.template ?? DEFAULTS.template;
    // The team's template of that name, else the platform's (404 when neither exists).
    const tpl = await resolveTemplate(db, teamId, template);
    // A snapshot's resources are baked in: they replace the request's.
    const snapshot = tpl.type === 'snapshot';
    const vcpus = snapshot ? tpl.vcpus : (body.vcpus ?? DEFAULTS.vcpus);
    const memoryMb = snapshot ? tpl.memory_mb : (body.memory_mb ?? DEFAULTS.memoryMb);
    const diskSizeMb = body.disk_size_mb ?? DEFAULTS.diskSizeMb;
    const timeoutSec = body.timeout_sec ?? 0;

    const team = await db.selectFrom('teams').select('is_byoc').where('id', '=', teamId).executeTakeFirst();
    const byoc = team?.is_byoc ?? false;
    await this.checkFitsSomeHost(teamId, byoc, vcpus, memoryMb);
    const placement: PlacementRequest = { teamId, byoc, vcpus, memoryMb, diskSizeMb };
    // A snapshot's files are on the host that made it: its capsules go there.
    const host = tpl.host_id
      ? await this.pickTemplateHost(tpl.host_id, template, placement)
      : await this.deps.scheduler.pick(placement);
    if (!host) {
      throw new ApiError(
        503,
        'no_hosts_available',
        `no online host has room for a capsule with ${vcpus} vCPUs, ${memoryMb} MB of memory and ${diskSizeMb} MB of disk`,
      );
    }

    const row = await db
      .insertInto('sandboxes')
      .values({
        team_id: teamId,
        host_id: host.id,
        template,
        template_id: tpl.id,
        template_team_id: tpl.team_id,
        status: 'pending',
        vcpus,
        memory_mb: memoryMb,
        disk_size_mb: diskSizeMb,
        timeout_sec: timeoutSec,
        metadata: JSON.stringify(body.metadata ?? {}),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    const wireId = formatId('capsule', row.id);
    await this.transition(row.id, 'pending', { status: 'starting' });

    const client = this.deps.hosts.get(host);
    let res;
    try {
      res = await client.createSandbox(
        {
          sandboxId: wireId,
          template,
          teamId: tpl.team_id,
          templateId: tpl.id,
          vcpus,
          memoryMb,
          diskSizeMb,
          timeoutSec,
          defaultUser: tpl.default_user,
          defaultEnv: (tpl.default_env ?? {}) as Record<string, string>,
          // A built template's START steps: processes are not in a template, so each capsule starts them.
          startCommands: tpl.start_commands ?? [],
        },
        { timeoutMs: CREATE_TIMEOUT_MS },
      );
    } catch (err) {
      const e = agentError(err, host.id);
      log.warn({ capsule: wireId, host: formatId('host', host.id), code: e.code, err }, 'capsule failed to start');
      await this.transition(row.id, ['pending', 'starting'], { status: 'error', error: e.message });
      // The agent rolls a failed create back itself; this covers a create that finished after we gave up.
      if (connectCode(err) !== Code.InvalidArgument) this.destroyQuietly(host, wireId);
      audit.capsuleCreateFailed(actor, { id: row.id, teamId }, e.message);
      throw new ApiError(e.status, e.code, `capsule ${wireId} failed to start: ${e.message}`);
    }

    const now = new Date();
    const running = await this.transition(row.id, 'starting', {
      status: 'running',
      host_ip: res.hostIp,
      started_at: now,
      last_active_at: now,
      agent_metadata: JSON.stringify(res.metadata),
    });
    if (!running) {
      // Destroyed (or reconciled) while starting: what the agent just made must not outlive the row.
      this.destroyQuietly(host, wireId);
      const cur = await this.reread(row.id);
      throw conflict(`capsule ${wireId} was ${cur.status} while it was starting`, 'invalid_state');
    }
    audit.capsuleCreated(actor, { id: row.id, teamId }, { template, vcpus, memoryMb, diskSizeMb, hostId: host.id });
    return running;
  }

  /** The host holding a snapshot template, if it is online and has room; 503 otherwise. */
  private async pickTemplateHost(hostId: string, template: string, req: PlacementRequest): Promise<HostRow> {
    const load = (await candidateHosts(this.deps.db, req)).find((l) => l.host.id === hostId);
    if (!load) {
      throw new ApiError(
        503,
        'host_unavailable',
        `template "${template}" is stored on host ${formatId('host', hostId)}, which is not online`,
      );
    }
    if (headroom(load, req) === null) {
      throw new ApiError(
        503,
        'no_hosts_available',
        `host ${formatId('host', hostId)}, which stores template "${template}", has no room for the capsule`,
      );
    }
    return load.host;
  }

  /** A precise 400 when no host of the team's kind could ever run the request. */
  private async checkFitsSomeHost(teamId: string, byoc: boolean, vcpus: number, memoryMb: number): Promise<void> {
    let q = this.deps.db
      .selectFrom('hosts')
      .select([sql<number>`max(cpu_cores)`.as('cores'), sql<number>`max(memory_mb)`.as('memory')])
      .where('status', '=', 'online');
    q = byoc ? q.where('type', '=', 'byoc').where('team_id', '=', teamId) : q.where('type', '=', 'regular');
    const max = await q.executeTakeFirst();
    const cores = Number(max?.cores ?? 0);
    const memory = Number(max?.memory ?? 0);
    if (cores > 0 && vcpus > cores) {
      throw new ApiError(400, 'invalid_request', `vcpus must be at most ${cores} (the CPU cores of the largest host)`);
    }
    if (memory > 0 && memoryMb > memory) {
      throw new ApiError(
        400,
        'invalid_request',
        `memory_mb must be at most ${memory} (the memory of the largest host)`,
      );
    }
  }

  private destroyQuietly(host: HostRow, wireId: string): void {
    this.deps.hosts
      .get(host)
      .destroySandbox({ sandboxId: wireId }, { timeoutMs: LIFECYCLE_TIMEOUT_MS })
      .catch((err: unknown) => {
        if (connectCode(err) === Code.NotFound) return;
        // The host monitor destroys capsules no live row claims once the host answers again.
        this.deps.log.warn({ err, capsule: wireId }, 'capsules: cleanup destroy failed');
      });
  }

  // ------------------------------------------------------------------ destroy

  async destroy(teamId: string, actor: AuditActor, wireIdIn: unknown): Promise<void> {
    let row = await this.get(teamId, wireIdIn);
    const wireId = formatId('capsule', row.id);
    let from: CapsuleStatus | null = null;
    for (let attempt = 0; attempt < 5 && row.status !== 'stopped'; attempt++) {
      if (row.status === 'running') await this.saveMetrics(row, ['24h']);
      const done = await this.transition(row.id, row.status, { status: 'stopped' });
      if (done) {
        from = row.status;
        break;
      }
      row = await this.reread(row.id);
    }
    if (from === null) return; // already stopped: nothing to do
    if (from === 'paused') {
      await this.deps.db
        .deleteFrom('sandbox_metric_points')
        .where('sandbox_id', '=', row.id)
        .where('tier', 'in', ['10m', '2h'])
        .execute();
    }
    this.deps.audit.capsuleDestroyed(actor, { id: row.id, teamId }, from);
    if (from === 'error') return; // nothing was left on the host
    const host = row.host_id
      ? await this.deps.db.selectFrom('hosts').selectAll().where('id', '=', row.host_id).executeTakeFirst()
      : undefined;
    if (!host?.address) return;
    try {
      await this.deps.hosts.get(host).destroySandbox({ sandboxId: wireId }, { timeoutMs: LIFECYCLE_TIMEOUT_MS });
    } catch (err) {
      if (connectCode(err) === Code.NotFound) return;
      // The row is stopped either way; an unreachable host's monitor pass destroys the orphan later.
      this.deps.log.warn({ err, capsule: wireId }, 'capsules: agent destroy failed; the host monitor will retry');
    }
  }

  // ------------------------------------------------------------------ pause / resume / ping

  async pause(teamId: string, actor: AuditActor, wireIdIn: unknown): Promise<SandboxRow> {
    const live = await this.running(teamId, wireIdIn);
    try {
      await live.client.pauseSandbox({ sandboxId: live.wireId }, { timeoutMs: LIFECYCLE_TIMEOUT_MS });
    } catch (err) {
      throw agentError(err, live.host.id);
    }
    // Flush after the pause: the agent keeps a paused capsule's points until then.
    await this.saveMetrics(live.row, ['10m', '2h', '24h']);
    const row = await this.transition(live.row.id, 'running', { status: 'paused' });
    if (row) {
      this.deps.audit.capsulePaused(actor, { id: row.id, teamId });
      return row;
    }
    const cur = await this.reread(live.row.id);
    if (cur.status === 'paused') return cur; // the host monitor saw the pause first
    throw conflict(`capsule ${live.wireId} became ${cur.status} while it was being paused`, 'invalid_state');
  }

  async resume(teamId: string, actor: AuditActor, wireIdIn: unknown): Promise<SandboxRow> {
    const row = await this.get(teamId, wireIdIn);
    const wireId = formatId('capsule', row.id);
    if (row.status === 'running') return row; // already running: resuming is a no-op
    if (row.status !== 'paused') {
      throw new ApiError(
        409,
        'invalid_state',
        `capsule ${wireId} is ${row.status}; only paused capsules can be resumed`,
      );
    }
    const host = await this.hostOf(row);
    let res;
    try {
      res = await this.deps.hosts
        .get(host)
        .resumeSandbox({ sandboxId: wireId, timeoutSec: row.timeout_sec }, { timeoutMs: LIFECYCLE_TIMEOUT_MS });
    } catch (err) {
      throw agentError(err, host.id);
    }
    const now = new Date();
    const updated = await this.transition(row.id, 'paused', {
      status: 'running',
      host_ip: res.hostIp,
      last_active_at: now,
    });
    if (updated) {
      this.deps.audit.capsuleResumed(actor, { id: row.id, teamId });
      return updated;
    }
    const cur = await this.reread(row.id);
    if (cur.status === 'running') return cur;
    throw conflict(`capsule ${wireId} became ${cur.status} while it was being resumed`, 'invalid_state');
  }

  async ping(teamId: string, wireIdIn: unknown): Promise<void> {
    const live = await this.running(teamId, wireIdIn);
    try {
      await live.client.pingSandbox({ sandboxId: live.wireId }, { timeoutMs: SHORT_TIMEOUT_MS });
    } catch (err) {
      throw agentError(err, live.host.id);
    }
    this.touched.set(live.row.id, Date.now());
    await this.writeActivity(live.row.id);
  }

  /**
   * A new idle timeout for a running or paused capsule. A running capsule's
   * agent applies it at once (its idle timer restarts); a paused one gets it
   * from the row when it is resumed.
   */
  async setTimeout(teamId: string, wireIdIn: unknown, timeoutSec: number): Promise<SandboxRow> {
    const row = await this.runningOrPaused(teamId, wireIdIn, 'have a timeout');
    const wireId = formatId('capsule', row.id);
    if (row.status === 'running') {
      const live = await this.live(row);
      try {
        await live.client.setSandboxTimeout({ sandboxId: wireId, timeoutSec }, { timeoutMs: SHORT_TIMEOUT_MS });
      } catch (err) {
        throw agentError(err, live.host.id);
      }
    }
    const updated = await this.deps.db
      .updateTable('sandboxes')
      .set({
        timeout_sec: timeoutSec,
        last_updated: new Date(),
        ...(row.status === 'running' ? { last_active_at: new Date() } : {}),
      })
      .where('id', '=', row.id)
      .where('status', '=', row.status)
      .returningAll()
      .executeTakeFirst();
    if (updated) return updated;
    const cur = await this.reread(row.id);
    throw conflict(`capsule ${wireId} became ${cur.status} while its timeout was being changed`, 'invalid_state');
  }

  // ------------------------------------------------------------------ metrics

  /** Moves the agent's metric points of a capsule into the database (best effort). */
  private async saveMetrics(row: SandboxRow, tiers: MetricTier[]): Promise<void> {
    try {
      const host = await this.hostOf(row);
      const res = await this.deps.hosts
        .get(host)
        .flushSandboxMetrics({ sandboxId: formatId('capsule', row.id) }, { timeoutMs: SHORT_TIMEOUT_MS });
      const byTier: Record<MetricTier, MetricPoint[]> = {
        '10m': res.points10m,
        '2h': res.points2h,
        '24h': res.points24h,
      };
      const values = tiers.flatMap((tier) =>
        byTier[tier].map((p) => ({
          sandbox_id: row.id,
          tier,
          ts: Number(p.timestampUnix),
          cpu_pct: p.cpuPct,
          mem_bytes: Number(p.memBytes),
          disk_bytes: Number(p.diskBytes),
        })),
      );
      // Several samples can share a second; the first one is kept.
      for (let i = 0; i < values.length; i += 1000) {
        await this.deps.db
          .insertInto('sandbox_metric_points')
          .values(values.slice(i, i + 1000))
          .onConflict((oc) => oc.doNothing())
          .execute();
      }
    } catch (err) {
      this.deps.log.warn({ err, capsule: formatId('capsule', row.id) }, 'capsules: saving metrics failed');
    }
  }
}
