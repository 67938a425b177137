// The host monitor keeps the database in agreement with the hosts.
//
// Passive: an online host without a heartbeat for `heartbeatTimeoutMs` becomes
// `unreachable` and its pending/starting/running capsules `missing` (both
// reversible: the heartbeat route brings the host back, the next pass heals
// the capsules).
//
// Active: every online host is asked what it runs (ListSandboxes) and each
// capsule row is corrected: missing-but-alive → its live state, running or
// missing but gone → stopped, running but auto-paused by the host's TTL reaper
// → paused, a create that a dead control plane left half-done → running or
// error. Capsules a host runs that no live row claims are destroyed. Templates
// of deleted teams are removed from the hosts that hold them, once those are up.
//
// Several control planes may run this at once: every write is a compare-and-set
// on the state it read, so a lost race changes nothing and logs nothing.
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { formatId, tryParseId } from '@wrenn/contracts';
import type { CapsuleStatus, DB, HostRow } from '../db/schema.js';
import type { AuditLogger } from '../audit/logger.js';
import type { HostClientPool } from './pool.js';
import { PeriodicTask } from '../periodic.js';
import { purgeDeletedTeamTemplates } from '../templates/store.js';

/** Capsule states that occupy a host (and block its deletion). */
export const ACTIVE_CAPSULE_STATES: CapsuleStatus[] = ['pending', 'starting', 'running', 'paused', 'missing'];

export interface HostMonitorOptions {
  db: Kysely<DB>;
  pool: HostClientPool;
  audit: AuditLogger;
  log: Logger;
  intervalMs?: number;
  heartbeatTimeoutMs?: number;
  /** A create older than this with no capsule on its host failed (its control plane died). */
  staleCreateMs?: number;
  /** Capsules younger than this are never treated as orphans (their row may not be committed yet). */
  orphanGraceMs?: number;
}

export const DEFAULT_MONITOR_INTERVAL_MS = 5_000;
export const DEFAULT_HEARTBEAT_TIMEOUT_MS = 90_000;

interface Live {
  status: string;
  hostIp: string;
  createdAtMs: number;
}

export class HostMonitor {
  private readonly task: PeriodicTask;
  /** Its own task: a slow host answering a delete must not hold up the capsule reconciliation. */
  private readonly purgeTask: PeriodicTask;
  private readonly heartbeatTimeoutMs: number;
  private readonly staleCreateMs: number;
  private readonly orphanGraceMs: number;

  constructor(private readonly opts: HostMonitorOptions) {
    this.heartbeatTimeoutMs = opts.heartbeatTimeoutMs ?? DEFAULT_HEARTBEAT_TIMEOUT_MS;
    this.staleCreateMs = opts.staleCreateMs ?? 5 * 60_000;
    this.orphanGraceMs = opts.orphanGraceMs ?? 60_000;
    const interval = opts.intervalMs ?? DEFAULT_MONITOR_INTERVAL_MS;
    this.task = new PeriodicTask('host monitor pass', interval, () => this.runOnce(), opts.log);
    this.purgeTask = new PeriodicTask('deleted team templates pass', interval, () => this.purgeOnce(), opts.log);
  }

  start(): void {
    this.task.start();
    this.purgeTask.start();
  }

  async stop(): Promise<void> {
    await Promise.all([this.task.stop(), this.purgeTask.stop()]);
  }

  /** One pass: passive checks, then every online host reconciled. */
  async runOnce(): Promise<void> {
    await this.markSilentHostsDown();
    const hosts = await this.opts.db
      .selectFrom('hosts')
      .selectAll()
      .where('status', '=', 'online')
      .where('address', '!=', '')
      .execute();
    await Promise.all(hosts.map((h) => this.reconcile(h)));
  }

  /** Deleted teams' templates whose hosts were down at the time, retried until they are gone. */
  async purgeOnce(): Promise<void> {
    await purgeDeletedTeamTemplates(this.opts.db, this.opts.pool, this.opts.log);
  }

  private async markSilentHostsDown(): Promise<void> {
    const { db, audit, log } = this.opts;
    const cutoff = new Date(Date.now() - this.heartbeatTimeoutMs);
    const down = await db
      .updateTable('hosts')
      .set({ status: 'unreachable', updated_at: new Date() })
      .where('status', '=', 'online')
      .where((eb) => eb.or([eb('last_heartbeat_at', 'is', null), eb('last_heartbeat_at', '<', cutoff)]))
      .returning(['id', 'team_id'])
      .execute();
    for (const host of down) {
      const missing = await db
        .updateTable('sandboxes')
        .set({ status: 'missing', last_updated: new Date() })
        .where('host_id', '=', host.id)
        .where('status', 'in', ['pending', 'starting', 'running'])
        .returning(['id', 'team_id'])
        .execute();
      log.warn({ host: formatId('host', host.id), missing: missing.length }, 'host missed its heartbeats: unreachable');
      audit.hostMarkedDown({ id: host.id, teamId: host.team_id }, missing.length);
      for (const c of missing) {
        audit.capsuleReconciled({ id: c.id, teamId: c.team_id }, 'running', 'missing', 'host unreachable');
      }
    }
  }

  private async reconcile(host: HostRow): Promise<void> {
    const { db, pool, log } = this.opts;
    let live: Map<string, Live>;
    try {
      const res = await pool.get(host).listSandboxes({}, { timeoutMs: 5_000 });
      const autoPaused = new Set(res.autoPausedSandboxIds);
      live = new Map();
      for (const s of res.sandboxes) {
        const id = tryParseId('capsule', s.sandboxId);
        if (id === null) continue;
        live.set(id, {
          status: autoPaused.has(s.sandboxId) ? 'paused' : s.status,
          hostIp: s.hostIp,
          createdAtMs: Number(s.createdAtUnix) * 1000,
        });
      }
    } catch (err) {
      // Heartbeats decide whether a host is down; one failed call only skips this pass.
      log.debug({ err, host: formatId('host', host.id) }, 'host monitor: ListSandboxes failed');
      return;
    }

    const rows = await db
      .selectFrom('sandboxes')
      .select(['id', 'team_id', 'status', 'created_at'])
      .where('host_id', '=', host.id)
      .where('status', 'in', ACTIVE_CAPSULE_STATES)
      .execute();
    const claimed = new Set<string>();
    for (const row of rows) {
      claimed.add(row.id);
      const alive = live.get(row.id);
      const liveStatus: CapsuleStatus | null = alive ? (alive.status === 'paused' ? 'paused' : 'running') : null;
      let to: CapsuleStatus | null = null;
      let reason = '';
      let error = '';
      switch (row.status) {
        case 'missing':
          to = liveStatus ?? 'stopped';
          reason = liveStatus ? 'host is back and the capsule is alive' : 'host is back but the capsule is gone';
          break;
        case 'running':
          if (liveStatus === 'paused') [to, reason] = ['paused', 'paused by the host (timeout)'];
          else if (!liveStatus) [to, reason] = ['stopped', 'the capsule is no longer on its host'];
          break;
        case 'paused':
          if (liveStatus === 'running') [to, reason] = ['running', 'the host reports it running'];
          else if (!liveStatus) [to, reason] = ['stopped', 'the capsule is no longer on its host'];
          break;
        case 'pending':
        case 'starting':
          if (Date.now() - row.created_at.getTime() < this.staleCreateMs) break;
          if (liveStatus) [to, reason] = [liveStatus, 'create finished on the host'];
          else {
            [to, reason] = ['error', 'create was interrupted'];
            error = 'creation was interrupted (the control plane stopped while the capsule was starting)';
          }
          break;
      }
      if (!to || to === row.status) continue;
      const now = new Date();
      const changed = await db
        .updateTable('sandboxes')
        .set({
          status: to,
          last_updated: now,
          ...(to === 'running' && alive ? { host_ip: alive.hostIp } : {}),
          ...(error ? { error } : {}),
        })
        .where('id', '=', row.id)
        .where('status', '=', row.status)
        .executeTakeFirst();
      if (Number(changed.numUpdatedRows) === 0) continue; // another control plane (or a request) got there first
      log.info({ capsule: formatId('capsule', row.id), from: row.status, to, reason }, 'capsule reconciled');
      this.opts.audit.capsuleReconciled({ id: row.id, teamId: row.team_id }, row.status, to, reason);
    }

    // What the host runs that no live row claims would leak forever: destroy it.
    const unclaimed = [...live.entries()].filter(
      ([id, l]) => !claimed.has(id) && Date.now() - l.createdAtMs > this.orphanGraceMs,
    );
    if (unclaimed.length === 0) return;
    const stillLive = await db
      .selectFrom('sandboxes')
      .select('id')
      .where(
        'id',
        'in',
        unclaimed.map(([id]) => id),
      )
      .where('status', 'in', ACTIVE_CAPSULE_STATES)
      .execute();
    const keep = new Set(stillLive.map((r) => r.id));
    for (const [id] of unclaimed) {
      if (keep.has(id)) continue;
      log.warn({ capsule: formatId('capsule', id), host: formatId('host', host.id) }, 'destroying orphaned capsule');
      await pool
        .get(host)
        .destroySandbox({ sandboxId: formatId('capsule', id) }, { timeoutMs: 30_000 })
        .catch((err: unknown) => log.warn({ err }, 'destroying an orphaned capsule failed'));
    }
  }
}
