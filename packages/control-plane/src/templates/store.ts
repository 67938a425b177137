// Template lookups shared by the snapshot routes and capsule create. A team
// sees its own templates and the platform's (team id = the all-zero UUID);
// its own win when both have a name.
import { formatId, isSafeName, PLATFORM_UUID } from '@wrenn/contracts';
import { sql, type Kysely } from 'kysely';
import { Code } from '@connectrpc/connect';
import type { DB, HostRow, TemplateRow, TemplateType } from '../db/schema.js';
import { ApiError, badRequest, notFound } from '../errors.js';
import type { HostClientPool } from '../hosts/pool.js';
import { agentError, connectCode, hostUnreachable } from '../capsules/agent-errors.js';

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

/**
 * Removes a template's files from every online host that may hold them (a
 * host without them answers NotFound, which is fine). Any other failure, or
 * the host recorded on the template being unreachable, is an error: the
 * caller keeps the row, so the files are never orphaned.
 */
export async function deleteTemplateFiles(db: Kysely<DB>, hosts: HostClientPool, t: TemplateRow): Promise<void> {
  const online = await db
    .selectFrom('hosts')
    .selectAll()
    .where('status', '=', 'online')
    .where('address', '!=', '')
    .execute();
  if (t.host_id) {
    const owner = await db.selectFrom('hosts').selectAll().where('id', '=', t.host_id).executeTakeFirst();
    // A host that no longer exists took the files with it.
    if (owner && !online.some((h) => h.id === owner.id)) {
      throw hostUnreachable(owner.id);
    }
  }
  await Promise.all(online.map((h) => deleteOn(hosts, h, t)));
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
