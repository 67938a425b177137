// Snapshots: a capsule's file system saved as a team template on its host.
//
// The capsule is marked `paused` before the host works (the agent freezes it
// while copying and reports it paused), so the host monitor never sees a
// running row without a running capsule; the previous state is written back
// afterwards, or on failure. The work does not depend on the HTTP request: a
// client that disconnects mid-snapshot does not interrupt it.
import { randomBytes } from 'node:crypto';
import { formatId, newUuid, PLATFORM_UUID } from '@wrenn/contracts';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { AuditActor, AuditLogger } from '../audit/logger.js';
import type { CapsuleStatus, DB, TemplateRow } from '../db/schema.js';
import { conflict, forbidden, notFound } from '../errors.js';
import type { HostClientPool } from '../hosts/pool.js';
import { agentError } from '../capsules/agent-errors.js';
import type { CapsuleService } from '../capsules/service.js';
import { isUniqueViolation } from '../services/accounts.js';
import { checkTemplateName, deleteTemplate, findTemplate } from './store.js';
import type { CreateSnapshotBody } from './schemas.js';

/** Copying a large file system takes a while; the agent is given this long. */
const SNAPSHOT_TIMEOUT_MS = 10 * 60_000;

export interface SnapshotServiceDeps {
  db: Kysely<DB>;
  hosts: HostClientPool;
  audit: AuditLogger;
  capsules: CapsuleService;
  log: Logger;
}

export class SnapshotService {
  constructor(private readonly deps: SnapshotServiceDeps) {}

  async create(teamId: string, actor: AuditActor, body: CreateSnapshotBody, overwrite: boolean): Promise<TemplateRow> {
    const { db, hosts, audit, capsules, log } = this.deps;
    const name = checkTemplateName(body.name ?? `template-${randomBytes(4).toString('hex')}`);
    const capsule = await capsules.runningOrPaused(teamId, body.sandbox_id, 'can be snapshotted');
    const wireId = formatId('capsule', capsule.id);
    const existing = await findTemplate(db, teamId, name);
    if (existing?.team_id === PLATFORM_UUID) {
      throw conflict(`"${name}" is the name of a platform template; choose another name`, 'name_reserved');
    }
    if (existing && !overwrite) {
      throw conflict(
        `your team already has a template named "${name}"; delete it or pass ?overwrite=true`,
        'template_name_taken',
      );
    }
    const host = await capsules.hostOf(capsule);
    // Old files first, then the old row: a failure here keeps the old template whole.
    if (existing) await deleteTemplate(db, hosts, existing);

    const from = capsule.status;
    if (!(await this.setStatus(capsule.id, from, 'paused'))) {
      const cur = await capsules.get(teamId, body.sandbox_id);
      throw conflict(`capsule ${wireId} became ${cur.status} before the snapshot started`, 'invalid_state');
    }
    const templateId = newUuid();
    const client = hosts.get(host);
    let sizeBytes: number;
    try {
      const res = await client.createSnapshot(
        { sandboxId: wireId, name, teamId, templateId },
        { timeoutMs: SNAPSHOT_TIMEOUT_MS },
      );
      sizeBytes = Number(res.sizeBytes);
    } catch (err) {
      await this.setStatus(capsule.id, 'paused', from);
      log.warn({ err, capsule: wireId, name }, 'snapshot failed');
      throw agentError(err, host.id);
    }

    // The defaults (and START commands) of the template the capsule came from carry over.
    const source = await db
      .selectFrom('templates')
      .select(['default_user', 'default_env', 'start_commands'])
      .where('id', '=', capsule.template_id)
      .executeTakeFirst();
    let row: TemplateRow;
    try {
      row = await db
        .insertInto('templates')
        .values({
          id: templateId,
          team_id: teamId,
          name,
          type: 'snapshot',
          vcpus: capsule.vcpus,
          memory_mb: capsule.memory_mb,
          size_bytes: sizeBytes,
          default_user: source?.default_user ?? '',
          default_env: JSON.stringify(source?.default_env ?? {}),
          start_commands: JSON.stringify(source?.start_commands ?? []),
          metadata: JSON.stringify(capsule.metadata ?? {}),
          host_id: host.id,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
    } catch (err) {
      // Another request took the name meanwhile: this snapshot's files must not outlive the failure.
      await client
        .deleteSnapshot({ name, teamId, templateId }, { timeoutMs: SNAPSHOT_TIMEOUT_MS })
        .catch((e: unknown) => log.error({ err: e, templateId }, 'snapshot: removing unrecorded files failed'));
      await this.setStatus(capsule.id, 'paused', from);
      if (isUniqueViolation(err)) {
        throw conflict(`your team already has a template named "${name}"`, 'template_name_taken');
      }
      throw err;
    }
    // The agent resumed a capsule that was running; a destroy meanwhile wins (the update finds no paused row).
    if (from !== 'paused') await this.setStatus(capsule.id, 'paused', from);
    audit.snapshotCreated(actor, { teamId, name }, { capsuleId: capsule.id, sizeBytes, overwrote: existing !== null });
    return row;
  }

  async delete(teamId: string, actor: AuditActor, nameIn: unknown): Promise<void> {
    const { db, hosts, audit } = this.deps;
    const name = checkTemplateName(nameIn);
    const t = await findTemplate(db, teamId, name);
    if (!t) throw notFound(`template "${name}" not found`, 'template_not_found');
    // Checked before any host is asked, so no platform file is ever touched by a team.
    if (t.team_id !== teamId) throw forbidden(`"${name}" is a platform template; teams cannot delete it`);
    await deleteTemplate(db, hosts, t);
    audit.snapshotDeleted(actor, { teamId, name });
  }

  /** Compare-and-set of a capsule's status. */
  private async setStatus(id: string, from: CapsuleStatus, to: CapsuleStatus): Promise<boolean> {
    const r = await this.deps.db
      .updateTable('sandboxes')
      .set({ status: to, last_updated: new Date() })
      .where('id', '=', id)
      .where('status', '=', from)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }
}
