// Template builds as the API sees them: submission (everything checked before
// a row exists: recipe, healthcheck, archive, names), listing, cancel. The
// work itself is done by BuildRunner workers, on whichever control plane
// takes the build from the queue.
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { formatId, PLATFORM_UUID } from '@wrenn/contracts';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { AuditActor, AuditLogger } from '../audit/logger.js';
import type { BuildRow, BuildStatus, DB } from '../db/schema.js';
import { ApiError, badRequest, conflict, notFound, parseIdParam } from '../errors.js';
import { isUniqueViolation } from '../services/accounts.js';
import { findTemplate } from '../templates/store.js';
import { ArchiveError, checkArchive, type CheckedArchive } from './archive.js';
import type { BuildQueue } from './queue.js';
import { parseHealthcheck, parseRecipe, RecipeError } from './recipe.js';
import { BUILD_DEFAULTS, CreateBuildRequest, type CreateBuildBody } from './schemas.js';
import { POST_BUILD, PRE_BUILD } from './runner.js';

const checkBody = TypeCompiler.Compile(CreateBuildRequest);

export interface BuildJson {
  id: string;
  name: string;
  base_template: string;
  recipe: string[];
  healthcheck?: string;
  vcpus: number;
  memory_mb: number;
  status: BuildStatus;
  current_step: number;
  total_steps: number;
  logs: BuildRow['logs'];
  error?: string;
  sandbox_id?: string;
  host_id?: string;
  skip_pre_post: boolean;
  default_user: string;
  default_env: Record<string, string>;
  created_at: string;
  started_at?: string;
  completed_at?: string;
}

export function buildJson(b: BuildRow): BuildJson {
  return {
    id: formatId('build', b.id),
    name: b.name,
    base_template: b.base_template,
    recipe: b.recipe,
    ...(b.healthcheck ? { healthcheck: b.healthcheck } : {}),
    vcpus: b.vcpus,
    memory_mb: b.memory_mb,
    status: b.status,
    current_step: b.current_step,
    total_steps: b.total_steps,
    logs: b.logs,
    ...(b.error ? { error: b.error } : {}),
    ...(b.sandbox_id ? { sandbox_id: formatId('capsule', b.sandbox_id) } : {}),
    ...(b.host_id ? { host_id: formatId('host', b.host_id) } : {}),
    skip_pre_post: b.skip_pre_post,
    default_user: b.default_user,
    default_env: (b.default_env ?? {}) as Record<string, string>,
    created_at: b.created_at.toISOString(),
    ...(b.started_at ? { started_at: b.started_at.toISOString() } : {}),
    ...(b.completed_at ? { completed_at: b.completed_at.toISOString() } : {}),
  };
}

export interface BuildServiceDeps {
  db: Kysely<DB>;
  audit: AuditLogger;
  queue: BuildQueue;
  log: Logger;
}

export class BuildService {
  constructor(readonly deps: BuildServiceDeps) {}

  /** The body of a JSON request or the `config` part of a multipart one, checked like a JSON body. */
  parseConfig(raw: unknown, where = 'body'): CreateBuildBody {
    if (!checkBody.Check(raw)) {
      const e = checkBody.Errors(raw).First();
      const at = where + (e?.path ?? '').replaceAll('/', '.');
      throw badRequest(`${at} ${e?.message.toLowerCase() ?? 'is invalid'}`);
    }
    return raw;
  }

  async submit(actor: AuditActor, body: CreateBuildBody, archiveBytes: Buffer | null): Promise<BuildRow> {
    const { db, audit, queue, log } = this.deps;
    const baseTemplate = body.base_template ?? BUILD_DEFAULTS.baseTemplate;
    const skipPrePost = body.skip_pre_post ?? false;
    const healthcheck = (body.healthcheck ?? '').trim();
    let steps;
    try {
      steps = parseRecipe(body.recipe);
      if (healthcheck) parseHealthcheck(healthcheck);
    } catch (err) {
      if (err instanceof RecipeError) throw badRequest(err.message, 'invalid_recipe');
      throw err;
    }
    let archive: CheckedArchive | null = null;
    if (archiveBytes) {
      try {
        archive = await checkArchive(archiveBytes);
      } catch (err) {
        if (err instanceof ArchiveError) throw badRequest(err.message, 'invalid_archive');
        throw err;
      }
    }
    for (const s of steps) {
      if (s.kind !== 'COPY') continue;
      if (!archive) {
        throw badRequest(
          `recipe line ${s.line}: COPY needs an uploaded archive (multipart part "archive")`,
          'invalid_recipe',
        );
      }
      const missing = s.srcs.find((src) => !archive.paths.has(src));
      if (missing)
        throw badRequest(`recipe line ${s.line}: COPY source "${missing}" is not in the archive`, 'invalid_recipe');
    }
    const base = await findTemplate(db, PLATFORM_UUID, baseTemplate);
    if (!base || base.team_id !== PLATFORM_UUID) {
      throw badRequest(`base_template "${baseTemplate}" is not a platform template`);
    }
    if (await findTemplate(db, PLATFORM_UUID, body.name)) {
      throw conflict(`a platform template named "${body.name}" already exists`, 'template_name_taken');
    }

    const totalSteps = steps.length + (skipPrePost ? 0 : PRE_BUILD.length + POST_BUILD.length);
    let row: BuildRow;
    try {
      row = await db.transaction().execute(async (trx) => {
        const r = await trx
          .insertInto('template_builds')
          .values({
            name: body.name,
            base_template: baseTemplate,
            recipe: JSON.stringify(body.recipe),
            healthcheck,
            vcpus: body.vcpus ?? BUILD_DEFAULTS.vcpus,
            memory_mb: body.memory_mb ?? BUILD_DEFAULTS.memoryMb,
            total_steps: totalSteps,
            team_id: PLATFORM_UUID,
            skip_pre_post: skipPrePost,
            logs: '[]',
            default_env: '{}',
            metadata: JSON.stringify(
              archive ? { archive_format: archive.format, archive_bytes: archiveBytes!.length } : {},
            ),
          })
          .returningAll()
          .executeTakeFirstOrThrow();
        if (archive)
          await trx.insertInto('template_build_archives').values({ build_id: r.id, data: archive.tar }).execute();
        return r;
      });
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw conflict(`a build of "${body.name}" is already pending or running`, 'build_in_progress');
      }
      throw err;
    }
    try {
      await queue.push(row.id);
    } catch (err) {
      log.error({ err }, 'builds: queueing failed');
      await db.deleteFrom('template_builds').where('id', '=', row.id).execute();
      throw new ApiError(503, 'unavailable', 'the build queue is unavailable; try again later');
    }
    audit.record({
      teamId: PLATFORM_UUID,
      actor,
      resourceType: 'build',
      resourceId: formatId('build', row.id),
      action: 'create',
      scope: 'admin',
      status: 'success',
      metadata: { name: row.name, base_template: baseTemplate, steps: totalSteps, archive: archive?.format ?? null },
    });
    return row;
  }

  async get(idIn: unknown): Promise<BuildRow> {
    const id = parseIdParam('build', idIn, 'id');
    const row = await this.deps.db.selectFrom('template_builds').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound(`build ${String(idIn)} not found`, 'build_not_found');
    return row;
  }

  async list(opts: { status?: BuildStatus; limit?: number }): Promise<BuildRow[]> {
    let q = this.deps.db.selectFrom('template_builds').selectAll();
    if (opts.status) q = q.where('status', '=', opts.status);
    return q
      .orderBy('created_at', 'desc')
      .orderBy('id')
      .limit(opts.limit ?? 50)
      .execute();
  }

  /**
   * Marks a pending or running build cancelled. The worker running it (on any control plane)
   * sees that within a second, stops the running step and destroys the build capsule.
   */
  async cancel(actor: AuditActor, idIn: unknown): Promise<BuildRow> {
    const { db, audit } = this.deps;
    const cur = await this.get(idIn);
    const row = await db
      .updateTable('template_builds')
      .set({ status: 'cancelled', completed_at: new Date() })
      .where('id', '=', cur.id)
      .where('status', 'in', ['pending', 'running'])
      .returningAll()
      .executeTakeFirst();
    if (!row) {
      const now = await this.get(idIn);
      throw badRequest(`build ${formatId('build', now.id)} is already ${now.status}`, 'invalid_state');
    }
    // A pending build never reaches a worker's cleanup.
    if (cur.status === 'pending')
      await db.deleteFrom('template_build_archives').where('build_id', '=', row.id).execute();
    audit.record({
      teamId: PLATFORM_UUID,
      actor,
      resourceType: 'build',
      resourceId: formatId('build', row.id),
      action: 'cancel',
      scope: 'admin',
      status: 'success',
      metadata: { name: row.name, was: cur.status },
    });
    return row;
  }
}
