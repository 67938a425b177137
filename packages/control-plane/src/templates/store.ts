// Template lookups shared by the snapshot routes and capsule create. A team
// sees its own templates and the platform's (team id = the all-zero UUID);
// its own win when both have a name.
import { formatId, isSafeName, PLATFORM_UUID } from '@wrenn/contracts';
import { sql, type Kysely } from 'kysely';
import { Code } from '@connectrpc/connect';
import type { Logger } from 'pino';
import type { DB, HostRow, TemplateRow, TemplateType } from '../db/schema.js';
import { ApiError, badRequest, notFound } from '../errors.js';
import type { HostClientPool } from '../hosts/pool.js';
import { agentError, connectCode } from '../capsules/agent-errors.js';

const DELETE_TIMEOUT_MS = 120_000;

export interface TemplateJson {
  name: string;
  type: TemplateType;
  vcpus: number | null;
  memory_mb: number | null;
  size_bytes: number;
  created_at: string;
  platform: boolean;
  metadata: Record<string, unknown>;
}

export function templateJson(t: TemplateRow): TemplateJson {
  const snapshot = t.type === 'snapshot';
  return {
    name: t.name,
    type: t.type,
    vcpus: snapshot ? t.vcpus : null,
    memory_mb: snapshot ? t.memory_mb : null,
    size_bytes: Number(t.size_bytes),
    created_at: t.created_at.toISOString(),
    platform: t.team_id === PLATFORM_UUID,
    metadata: t.metadata ?? {},
  };
}

/** A template name from a URL or body: a precise 400 when it could not name any template. */
export function checkTemplateName(name: unknown, field = 'name'): string {
  if (!isSafeName(name)) {
    throw badRequest(
      `${field} must be 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit, no ".."`,
    );
  }
  return name;
}

/** The team's template of that name, else the platform's; null when neither exists. */
export async function findTemplate(db: Kysely<DB>, teamId: string, name: string): Promise<TemplateRow | null> {
  const row = await db
    .selectFrom('templates')
    .selectAll()
    .where('name', '=', name)
    .where('team_id', 'in', [teamId, PLATFORM_UUID])
    .orderBy(sql`team_id = ${PLATFORM_UUID}::uuid`)
    .limit(1)
    .executeTakeFirst();
  return row ?? null;
}

/** Like findTemplate, but a missing template is a 404. */
export async function resolveTemplate(db: Kysely<DB>, teamId: string, name: string): Promise<TemplateRow> {
  const row = await findTemplate(db, teamId, checkTemplateName(name, 'template'));
  if (!row) throw notFound(`template "${name}" not found`, 'template_not_found');
  return row;
}

export async function listTemplates(db: Kysely<DB>, teamId: string, type?: TemplateType): Promise<TemplateRow[]> {
  let q = db.selectFrom('templates').selectAll().where('team_id', 'in', [teamId, PLATFORM_UUID]);
  if (type) q = q.where('type', '=', type);
  return q.orderBy('created_at', 'desc').orderBy('name').execute();
}

/** Every template of every team (platform admins), newest first, with whether its team was deleted. */
export async function listAllTemplates(db: Kysely<DB>): Promise<(TemplateRow & { team_deleted: boolean })[]> {
  return db
    .selectFrom('templates as t')
    .leftJoin('teams', 'teams.id', 't.team_id')
    .selectAll('t')
    .select(sql<boolean>`teams.deleted_at IS NOT NULL`.as('team_deleted'))
    .orderBy('t.created_at', 'desc')
    .orderBy('t.name')
    .orderBy('t.team_id')
    .execute();
}

/**
 * Removes a template's files from every online host (a host without them
 * answers NotFound, which is fine). The hosts that hold them — the recorded
 * host, or every registered host for a template without one — must all be
 * online, else nothing is touched (503): the caller keeps the row, so the
 * files are never orphaned. Any other host failure is an error too; hosts
 * that succeeded meanwhile answer NotFound on the retry.
 */
export async function deleteTemplateFiles(db: Kysely<DB>, hosts: HostClientPool, t: TemplateRow): Promise<void> {
  // 'pending' hosts never registered, so they hold nothing. A deleted host (no row) took its files with it.
  const all = await db.selectFrom('hosts').selectAll().where('status', '!=', 'pending').execute();
  const reachable = (h: HostRow) => h.status === 'online' && h.address !== '';
  const holders = t.host_id ? all.filter((h) => h.id === t.host_id) : all;
  const down = holders.find((h) => !reachable(h));
  if (down) {
    throw new ApiError(
      503,
      'host_unavailable',
      `template "${t.name}" has files on host ${formatId('host', down.id)}, which is unreachable; ` +
        'nothing was deleted, try again when the host is back',
    );
  }
  const results = await Promise.allSettled(all.filter(reachable).map((h) => deleteOn(hosts, h, t)));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** The one way a template goes: its files from the hosts first, then its row (kept when a host failed). */
export async function deleteTemplate(db: Kysely<DB>, hosts: HostClientPool, t: TemplateRow): Promise<void> {
  await deleteTemplateFiles(db, hosts, t);
  await db.deleteFrom('templates').where('id', '=', t.id).execute();
}

/**
 * Templates of deleted teams: the team's `deleted_at` is the mark that their
 * files must go, so nothing is lost while a host holding them is down. Run
 * right after a team is deleted and on every host monitor pass, this retries
 * until each host that holds files has answered; the row goes last. Returns
 * how many templates are still waiting.
 */
export async function purgeDeletedTeamTemplates(
  db: Kysely<DB>,
  hosts: HostClientPool,
  log: Logger,
  teamId?: string,
): Promise<number> {
  let q = db
    .selectFrom('templates as t')
    .innerJoin('teams', 'teams.id', 't.team_id')
    .selectAll('t')
    .where('teams.deleted_at', 'is not', null);
  if (teamId) q = q.where('t.team_id', '=', teamId);
  const rows = await q.execute();
  let waiting = 0;
  for (const t of rows) {
    try {
      await deleteTemplate(db, hosts, t);
      log.info({ team: formatId('team', t.team_id), template: t.name }, "deleted team's template removed");
    } catch (err) {
      waiting++;
      // A host being down is expected here and retried on the next pass; anything else is worth a look.
      const down = err instanceof ApiError && err.status === 503;
      log[down ? 'debug' : 'warn'](
        { err, team: formatId('team', t.team_id), template: t.name },
        "deleted team's template: removal postponed",
      );
    }
  }
  return waiting;
}

async function deleteOn(hosts: HostClientPool, host: HostRow, t: TemplateRow): Promise<void> {
  try {
    await hosts
      .get(host)
      .deleteSnapshot({ name: t.name, teamId: t.team_id, templateId: t.id }, { timeoutMs: DELETE_TIMEOUT_MS });
  } catch (err) {
    if (connectCode(err) === Code.NotFound) return;
    const e = agentError(err, host.id);
    throw new ApiError(
      e.status,
      e.code,
      `removing template "${t.name}" from host ${formatId('host', host.id)}: ${e.message}`,
    );
  }
}
