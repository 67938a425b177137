// Runs template builds: a pool of workers takes build ids from the queue and
// runs each build in its own build capsule through the host agent.
//
// A build's row is its whole state, so any control plane can serve it:
//  - claim: pending → running is a compare-and-set; a duplicate queue entry finds nothing to claim;
//  - lease: while a build runs its worker renews `lease_expires_at` every second with
//    `WHERE status = 'running'`; an update that matches nothing means the build was cancelled
//    (from any control plane), and the running step is aborted;
//  - crash: a build left `running` by a control plane that died stops being renewed. Every
//    control plane sweeps (at start, then every half lease, at most 30 s) for running builds whose lease ran out,
//    fails them and destroys their capsule. A lease rather than "capsule gone" because the
//    capsule of a crashed build usually still exists, and a live build must never be failed
//    by another control plane that merely started.
//  - shutdown: running builds are aborted, marked failed and their capsules destroyed before
//    the process exits.
import { setTimeout as sleep } from 'node:timers/promises';
import { Code } from '@connectrpc/connect';
import { create } from '@bufbuild/protobuf';
import { formatId, newUuid, PLATFORM_UUID } from '@wrenn/contracts';
import {
  WriteFileStreamRequestSchema,
  type WriteFileStreamRequest,
} from '@wrenn/contracts/gen/hostagent/v1/hostagent_pb';
import { sql, type Kysely } from 'kysely';
import type { Logger } from 'pino';
import { SYSTEM_ACTOR } from '../audit/logger.js';
import type { BuildLogEntry, BuildPhase, BuildRow, DB, StartCommand } from '../db/schema.js';
import { ApiError } from '../errors.js';
import type { HostClientPool } from '../hosts/pool.js';
import { agentError, connectCode } from '../capsules/agent-errors.js';
import type { CapsuleService, LiveCapsule } from '../capsules/service.js';
import { isUniqueViolation } from '../services/accounts.js';
import type { BuildQueue, BuildQueueConsumer } from './queue.js';
import {
  ARCHIVE_DIR,
  copyScript,
  ensureUserScript,
  expandEnv,
  parseHealthcheck,
  parseRecipe,
  resolvePath,
  shQuote,
  wrapCommand,
  type ExecContext,
  type Healthcheck,
  type RecipeStep,
} from './recipe.js';

export const PRE_BUILD = ['RUN apt-get update', 'USER wrenn-user', 'WORKDIR /home/wrenn-user'];
export const POST_BUILD = [
  'RUN apt-get clean',
  'RUN rm -rf /var/lib/apt/lists/*',
  `RUN rm -rf ${ARCHIVE_DIR} ${ARCHIVE_DIR}.*`,
];

const RECIPE_RUN_TIMEOUT_MS = 30_000;
const PRE_POST_TIMEOUT_MS = 10 * 60_000;
const START_TIMEOUT_MS = 10_000;
const WORKDIR_TIMEOUT_MS = 10_000;
const USER_TIMEOUT_MS = 30_000;
const COPY_TIMEOUT_MS = 60_000;
const EXTRACT_TIMEOUT_MS = 120_000;
const TEMPLATE_TIMEOUT_MS = 10 * 60_000;
const BUILD_DISK_MB = 5120;
const DEFAULT_LEASE_MS = 60_000;
const LEASE_RENEW_MS = 1_000;
const MAX_SWEEP_INTERVAL_MS = 30_000;
/** Each of stdout and stderr is kept to its last 64 KiB in the log. */
const LOG_TAIL = 64 * 1024;
const UPLOAD_CHUNK = 64 * 1024;

/** A build that cannot go on; `message` is what the build's `error` says (shown to admins). */
class BuildFailure extends Error {}

type Phase = Exclude<BuildPhase, 'setup' | 'healthcheck'>;
interface PlannedStep {
  phase: Phase;
  /** Number within its phase, from 1. */
  index: number;
  step: RecipeStep;
}

export interface BuildRunnerDeps {
  db: Kysely<DB>;
  hosts: HostClientPool;
  capsules: CapsuleService;
  queue: BuildQueue;
  log: Logger;
  /** How long a lease lasts without renewal (default 60 s); the sweep runs every half of it, at most 30 s. */
  leaseMs?: number;
}

const tail = (s: string) => (s.length > LOG_TAIL ? s.slice(-LOG_TAIL) : s);
const lastLine = (s: string) => s.trim().split('\n').slice(-3).join(' | ').slice(-500);

export class BuildRunner {
  private readonly stopping = new AbortController();
  private readonly loops: Promise<void>[] = [];
  private readonly consumers: BuildQueueConsumer[] = [];
  private sweeper: Promise<void> | null = null;
  private readonly leaseMs: number;

  constructor(private readonly deps: BuildRunnerDeps) {
    this.leaseMs = deps.leaseMs ?? DEFAULT_LEASE_MS;
  }

  /** Starts `workers` workers and the crash sweep; pending builds are queued again (duplicates are harmless). */
  async start(workers: number): Promise<void> {
    if (workers <= 0) return;
    await this.sweep();
    const pending = await this.deps.db
      .selectFrom('template_builds')
      .select('id')
      .where('status', '=', 'pending')
      .orderBy('created_at')
      .execute();
    for (const b of pending) await this.deps.queue.push(b.id);
    for (let i = 0; i < workers; i++) {
      const consumer = this.deps.queue.consumer();
      this.consumers.push(consumer);
      this.loops.push(this.loop(consumer));
    }
    this.sweeper = this.sweepLoop();
  }

  /** Aborts running builds, waits for their cleanup and final writes. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await Promise.allSettled([...this.loops, this.sweeper]);
    await Promise.allSettled(this.consumers.map((c) => c.close()));
  }

  private async loop(consumer: BuildQueueConsumer): Promise<void> {
    const signal = this.stopping.signal;
    while (!signal.aborted) {
      const id = await consumer.pop(signal);
      if (!id) continue;
      if (signal.aborted) {
        await consumer.unpop(id).catch(() => {});
        break;
      }
      await this.run(id).catch((err: unknown) => this.deps.log.error({ err, build: id }, 'build worker failed'));
    }
  }

  private async sweepLoop(): Promise<void> {
    const signal = this.stopping.signal;
    while (!signal.aborted) {
      await sleep(Math.min(MAX_SWEEP_INTERVAL_MS, this.leaseMs / 2), undefined, { signal }).catch(() => {});
      if (!signal.aborted)
        await this.sweep().catch((err: unknown) => this.deps.log.warn({ err }, 'build sweep failed'));
    }
  }

  /** Fails running builds whose worker stopped renewing their lease (its control plane died). */
  async sweep(): Promise<void> {
    const { db, log } = this.deps;
    const dead = await db
      .updateTable('template_builds')
      .set({
        status: 'failed',
        error: 'the control plane running this build stopped before it finished',
        completed_at: new Date(),
      })
      .where('status', '=', 'running')
      .where((eb) => eb.or([eb('lease_expires_at', 'is', null), eb('lease_expires_at', '<', sql<Date>`now()`)]))
      .returningAll()
      .execute();
    for (const b of dead) {
      log.warn({ build: formatId('build', b.id) }, 'build abandoned by a stopped control plane: failed');
      await this.destroyCapsule(b);
      await db.deleteFrom('template_build_archives').where('build_id', '=', b.id).execute();
    }
  }

  /** The end of a lease taken now, in the database's clock (the sweep compares with its now()). */
  private leaseEnd() {
    return sql<Date>`now() + ${`${Math.round(this.leaseMs)} milliseconds`}::interval`;
  }

  /** Destroys the capsule of a build another control plane abandoned. */
  private async destroyCapsule(b: BuildRow): Promise<void> {
    if (!b.sandbox_id) return;
    await this.deps.capsules
      .destroy(PLATFORM_UUID, SYSTEM_ACTOR, formatId('capsule', b.sandbox_id))
      .catch((err: unknown) =>
        this.deps.log.warn({ err, build: formatId('build', b.id) }, 'build sweep: destroy failed'),
      );
  }

  // ------------------------------------------------------------------ one build

  private async run(id: string): Promise<void> {
    const { db, log } = this.deps;
    if (!/^[0-9a-f-]{36}$/.test(id)) return;
    const now = new Date();
    const build = await db
      .updateTable('template_builds')
      .set({ status: 'running', started_at: now, lease_expires_at: this.leaseEnd() })
      .where('id', '=', id)
      .where('status', '=', 'pending')
      .returningAll()
      .executeTakeFirst();
    if (!build) return; // cancelled before it ran, already taken, or not ours
    const wireId = formatId('build', id);
    const started = performance.now();
    log.info({ build: wireId, name: build.name }, 'build started');

    const ac = new AbortController();
    const onStop = () => ac.abort(new BuildFailure('the control plane shut down during the build'));
    this.stopping.signal.addEventListener('abort', onStop, { once: true });
    const lease = this.keepLease(id, ac);
    let outcome: 'success' | 'failed' | 'cancelled' = 'failed';
    let error = '';
    const exec = new BuildExecution(this.deps, build, ac.signal);
    try {
      await exec.run();
      outcome = (await this.finish(build, exec)) ? 'success' : 'cancelled';
    } catch (err) {
      if (ac.signal.aborted && ac.signal.reason === 'cancelled') {
        outcome = 'cancelled';
      } else {
        const reason = ac.signal.aborted ? ac.signal.reason : err;
        if (reason instanceof BuildFailure) error = reason.message;
        else {
          log.error({ err: reason, build: wireId }, 'build failed unexpectedly');
          error = `build failed: ${reason instanceof ApiError ? reason.message : 'internal error (details in the control plane log)'}`;
        }
      }
    } finally {
      this.stopping.signal.removeEventListener('abort', onStop);
      lease.stop();
      await lease.done;
      // Every outcome: no build capsule outlives its build.
      await exec.cleanup();
      await db
        .deleteFrom('template_build_archives')
        .where('build_id', '=', id)
        .execute()
        .catch(() => {});
    }
    if (outcome === 'failed') {
      await db
        .updateTable('template_builds')
        .set({ status: 'failed', error, completed_at: new Date(), lease_expires_at: null })
        .where('id', '=', id)
        .where('status', '=', 'running')
        .execute();
    }
    const ms = Math.round(performance.now() - started);
    log.info({ build: wireId, name: build.name, outcome, ms, error: error || undefined }, 'build finished');
  }

  /** Renews the lease every second; a build no longer running (cancelled) aborts the execution. */
  private keepLease(id: string, ac: AbortController): { stop(): void; done: Promise<void> } {
    const stopper = new AbortController();
    const done = (async () => {
      while (!stopper.signal.aborted) {
        await sleep(LEASE_RENEW_MS, undefined, { signal: stopper.signal }).catch(() => {});
        if (stopper.signal.aborted) break;
        try {
          const r = await this.deps.db
            .updateTable('template_builds')
            .set({ lease_expires_at: this.leaseEnd() })
            .where('id', '=', id)
            .where('status', '=', 'running')
            .executeTakeFirst();
          if (Number(r.numUpdatedRows) === 0) {
            ac.abort('cancelled');
            break;
          }
        } catch (err) {
          this.deps.log.warn({ err }, 'build lease renewal failed');
        }
      }
    })();
    return { stop: () => stopper.abort(), done };
  }

  /**
   * Saves the template and marks the build a success. Returns false when the build was
   * cancelled meanwhile (then nothing is saved).
   */
  private async finish(build: BuildRow, exec: BuildExecution): Promise<boolean> {
    const { db, log } = this.deps;
    const t = exec.result!;
    let row;
    try {
      row = await db.transaction().execute(async (trx) => {
        const inserted = await trx
          .insertInto('templates')
          .values({
            id: t.templateId,
            team_id: PLATFORM_UUID,
            name: build.name,
            type: t.type,
            vcpus: build.vcpus,
            memory_mb: build.memory_mb,
            size_bytes: t.sizeBytes,
            default_user: t.defaultUser,
            default_env: JSON.stringify(t.defaultEnv),
            start_commands: JSON.stringify(t.startCommands),
            metadata: JSON.stringify({ build_id: formatId('build', build.id) }),
            host_id: t.hostId,
          })
          .returning('id')
          .executeTakeFirstOrThrow();
        const done = await trx
          .updateTable('template_builds')
          .set({
            status: 'success',
            template_id: inserted.id,
            default_user: t.defaultUser,
            default_env: JSON.stringify(t.defaultEnv),
            completed_at: new Date(),
            lease_expires_at: null,
          })
          .where('id', '=', build.id)
          .where('status', '=', 'running')
          .executeTakeFirst();
        // Cancelled at the last moment: roll the template back too.
        if (Number(done.numUpdatedRows) === 0) throw new CancelledLate();
        return inserted;
      });
    } catch (err) {
      await exec.removeTemplateFiles();
      if (err instanceof CancelledLate) return false;
      if (isUniqueViolation(err)) {
        throw new BuildFailure(`a template named "${build.name}" was created while the build ran`);
      }
      throw err;
    }
    log.info({ build: formatId('build', build.id), template: row.id, type: t.type }, 'build saved its template');
    return true;
  }
}

class CancelledLate extends Error {}

interface BuildResult {
  templateId: string;
  type: 'base' | 'snapshot';
  sizeBytes: number;
  hostId: string;
  defaultUser: string;
  defaultEnv: Record<string, string>;
  startCommands: StartCommand[];
}

/** One build's work in its capsule. */
class BuildExecution {
  private live: LiveCapsule | null = null;
  /** The build capsule's wire id, once it exists. */
  private capsuleId: string | null = null;
  /** The capsule is gone already (FlattenRootfs destroys it). */
  private capsuleGone = false;
  private logs: BuildLogEntry[] = [];
  private stepNo = 0;
  /** Id of template files this build wrote on its host (removed if the build does not succeed). */
  private templateOnHost: string | null = null;
  result: BuildResult | null = null;

  constructor(
    private readonly deps: BuildRunnerDeps,
    private readonly build: BuildRow,
    private readonly signal: AbortSignal,
  ) {}

  private get wireId(): string {
    return formatId('build', this.build.id);
  }

  async run(): Promise<void> {
    const { db } = this.deps;
    const b = this.build;
    const recipe = parseRecipe(b.recipe);
    const healthcheck = b.healthcheck ? parseHealthcheck(b.healthcheck) : null;
    const plan: PlannedStep[] = [];
    const add = (phase: Phase, steps: RecipeStep[]) =>
      steps.forEach((step, i) => plan.push({ phase, index: i + 1, step }));
    if (!b.skip_pre_post) add('pre-build', parseRecipe(PRE_BUILD));
    add('recipe', recipe);
    if (!b.skip_pre_post) add('post-build', parseRecipe(POST_BUILD));
    await db.updateTable('template_builds').set({ total_steps: plan.length }).where('id', '=', b.id).execute();

    // The build capsule: a platform capsule with a row like any other, so the host monitor leaves it alone.
    const row = await this.deps.capsules.create(PLATFORM_UUID, SYSTEM_ACTOR, {
      template: b.base_template,
      vcpus: b.vcpus,
      memory_mb: b.memory_mb,
      disk_size_mb: BUILD_DISK_MB,
      timeout_sec: 0,
      metadata: { 'wrenn.build': this.wireId },
    });
    this.capsuleId = formatId('capsule', row.id);
    // Recorded at once: a sweep after a crash finds the capsule to destroy through this.
    await db
      .updateTable('template_builds')
      .set({ sandbox_id: row.id, host_id: row.host_id })
      .where('id', '=', b.id)
      .execute();
    this.live = await this.deps.capsules.live(row);
    this.checkAborted();

    const ctx: ExecContext = { user: 'root', workdir: '/', env: await this.baseEnv() };
    await this.uploadArchive();

    const recipeEnv: Record<string, string> = {};
    const startCommands: StartCommand[] = [];
    let defaults: { user: string; env: Record<string, string>; workdir: string } | null = null;
    for (const p of plan) {
      if (p.phase === 'post-build' && !defaults) {
        defaults = { user: ctx.user, env: { ...recipeEnv }, workdir: ctx.workdir };
        // Post-build cleans up as root, from /.
        Object.assign(ctx, { user: 'root', workdir: '/' });
      }
      await this.runStep(p, ctx, recipeEnv, startCommands);
    }
    defaults ??= { user: ctx.user, env: { ...recipeEnv }, workdir: ctx.workdir };
    if (b.skip_pre_post) await this.exec(`rm -rf ${ARCHIVE_DIR} ${ARCHIVE_DIR}.*`, 30_000);

    if (healthcheck) {
      await this.waitHealthy(healthcheck, { user: defaults.user, workdir: defaults.workdir, env: ctx.env });
    }
    this.checkAborted();
    this.result = await this.saveTemplate(healthcheck !== null, defaults, startCommands);
  }

  private checkAborted(): void {
    if (this.signal.aborted) throw this.signal.reason instanceof Error ? this.signal.reason : new Error('aborted');
  }

  /** The capsule's own environment (PATH, HOME, …), the starting point of ENV expansion. */
  private async baseEnv(): Promise<Record<string, string>> {
    const r = await this.exec('env', 10_000);
    const env: Record<string, string> = {};
    for (const line of r.stdout.split('\n')) {
      const i = line.indexOf('=');
      if (i > 0 && /^[A-Za-z_][A-Za-z0-9_]*$/.test(line.slice(0, i))) env[line.slice(0, i)] = line.slice(i + 1);
    }
    // Per-capsule values must not be baked into the steps (and START commands) of the template.
    for (const k of ['HOSTNAME', 'PWD', 'OLDPWD', 'SHLVL', '_', 'TERM', 'WRENN_SANDBOX_ID', 'WRENN_TEMPLATE_ID']) {
      delete env[k];
    }
    env.PATH ??= '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
    env.HOME ??= '/root';
    // Nobody answers a prompt in a build (apt's debconf questions would wait for the step's timeout).
    env.DEBIAN_FRONTEND ??= 'noninteractive';
    return env;
  }

  private async uploadArchive(): Promise<void> {
    const { db } = this.deps;
    const a = await db
      .selectFrom('template_build_archives')
      .select('data')
      .where('build_id', '=', this.build.id)
      .executeTakeFirst();
    if (!a) return;
    const live = this.live!;
    const data = a.data;
    const sandboxId = live.wireId;
    async function* messages(): AsyncGenerator<WriteFileStreamRequest> {
      yield create(WriteFileStreamRequestSchema, {
        content: { case: 'meta', value: { sandboxId, path: `${ARCHIVE_DIR}.tar` } },
      });
      for (let off = 0; off < data.length; off += UPLOAD_CHUNK) {
        yield create(WriteFileStreamRequestSchema, {
          content: { case: 'chunk', value: data.subarray(off, off + UPLOAD_CHUNK) },
        });
      }
    }
    try {
      await live.client.writeFileStream(messages(), { timeoutMs: EXTRACT_TIMEOUT_MS, signal: this.signal });
    } catch (err) {
      this.checkAborted();
      throw new BuildFailure(`setup failed: uploading the archive: ${agentError(err, live.host.id).message}`);
    }
    const d = shQuote(ARCHIVE_DIR);
    const r = await this.exec(
      `mkdir -p ${d} && tar -xf ${d}.tar -C ${d} --no-same-owner && chmod -R a+rX ${d} && rm -f ${d}.tar`,
      EXTRACT_TIMEOUT_MS,
    );
    if (r.exit !== 0) throw new BuildFailure(`setup failed: extracting the archive: ${lastLine(r.stderr)}`);
  }

  private async runStep(
    p: PlannedStep,
    ctx: ExecContext,
    recipeEnv: Record<string, string>,
    startCommands: StartCommand[],
  ): Promise<void> {
    this.checkAborted();
    const n = ++this.stepNo;
    await this.deps.db
      .updateTable('template_builds')
      .set({ current_step: n })
      .where('id', '=', this.build.id)
      .execute();
    const s = p.step;
    const runTimeout = p.phase === 'recipe' ? RECIPE_RUN_TIMEOUT_MS : PRE_POST_TIMEOUT_MS;
    const t0 = performance.now();
    let r: ExecOutcome = { stdout: '', stderr: '', exit: 0 };
    switch (s.kind) {
      case 'RUN':
        r = await this.exec(wrapCommand(ctx, s.cmd), s.timeoutMs ?? runTimeout);
        break;
      case 'START':
        r = await this.exec(wrapCommand(ctx, s.cmd, { background: true }), START_TIMEOUT_MS);
        startCommands.push({ cmd: s.cmd, user: ctx.user, cwd: ctx.workdir, env: { ...ctx.env } });
        break;
      case 'ENV': {
        const v = expandEnv(s.value, ctx.env);
        ctx.env[s.key] = v;
        recipeEnv[s.key] = v;
        r.stdout = `${s.key}=${v}`;
        break;
      }
      case 'WORKDIR': {
        const dir = resolvePath(ctx.workdir, s.path);
        const q = shQuote(dir);
        // Made as root (a user may not write its parent), owned by the user when this step made it.
        r = await this.exec(
          `[ -d ${q} ] || { mkdir -p ${q} && chown ${shQuote(`${ctx.user}:`)} ${q}; }`,
          WORKDIR_TIMEOUT_MS,
        );
        if (r.exit === 0) ctx.workdir = dir;
        break;
      }
      case 'USER': {
        r = await this.exec(
          `${ensureUserScript(s.name)} && getent passwd ${shQuote(s.name)} | cut -d: -f6`,
          USER_TIMEOUT_MS,
        );
        if (r.exit === 0) {
          ctx.user = s.name;
          ctx.env.HOME = r.stdout.trim() || (s.name === 'root' ? '/root' : `/home/${s.name}`);
          ctx.env.USER = s.name;
          ctx.env.LOGNAME = s.name;
        }
        break;
      }
      case 'COPY': {
        const dst = resolvePath(ctx.workdir, s.dst);
        r = await this.exec(copyScript(s.srcs, dst, s.dst.endsWith('/'), ctx.user), COPY_TIMEOUT_MS);
        break;
      }
    }
    const entry: BuildLogEntry = {
      step: n,
      phase: p.phase,
      cmd: s.text,
      stdout: tail(r.stdout),
      stderr: tail(r.stderr),
      exit: r.exit,
      ok: r.exit === 0 && !r.timedOut,
      elapsed_ms: Math.round(performance.now() - t0),
    };
    await this.appendLog(entry, n);
    if (!entry.ok) {
      const why = r.timedOut
        ? `timed out after ${r.timeoutMs! / 1000} s`
        : `exit code ${r.exit}${r.stderr.trim() ? `: ${lastLine(r.stderr)}` : ''}`;
      const where = p.phase === 'recipe' ? ` (line ${s.line}: ${s.text.slice(0, 200)})` : ` (${s.text})`;
      throw new BuildFailure(`${p.phase} step ${p.index}${where} failed: ${why}`);
    }
  }

  private async appendLog(entry: BuildLogEntry, n: number): Promise<void> {
    this.logs.push(entry);
    await this.deps.db
      .updateTable('template_builds')
      .set({ logs: JSON.stringify(this.logs), current_step: n })
      .where('id', '=', this.build.id)
      .execute();
  }

  /** Runs a script as root in the build capsule; the step's abort signal kills it. */
  private async exec(script: string, timeoutMs: number): Promise<ExecOutcome> {
    this.checkAborted();
    const live = this.live!;
    const timeoutSec = Math.max(1, Math.ceil(timeoutMs / 1000));
    try {
      const res = await live.client.exec(
        { sandboxId: live.wireId, cmd: '/bin/sh', args: ['-c', script], timeoutSec },
        { signal: this.signal, timeoutMs: timeoutSec * 1000 + 15_000 },
      );
      return {
        stdout: Buffer.from(res.stdout).toString('utf8'),
        stderr: Buffer.from(res.stderr).toString('utf8'),
        exit: res.exitCode,
      };
    } catch (err) {
      this.checkAborted();
      if (connectCode(err) === Code.DeadlineExceeded) {
        return { stdout: '', stderr: '', exit: -1, timedOut: true, timeoutMs: timeoutSec * 1000 };
      }
      throw new BuildFailure(`the build capsule stopped answering: ${agentError(err, live.host.id).message}`);
    }
  }

  /**
   * Polls the healthcheck until it passes. Failures in the start period do not count; it fails
   * after `retries` failures (0 = unlimited) or at start_period + (retries + 1) × interval.
   */
  private async waitHealthy(hc: Healthcheck, ctx: ExecContext): Promise<void> {
    const t0 = performance.now();
    const deadline = t0 + hc.startPeriodMs + (hc.retries + 1) * hc.intervalMs;
    const script = wrapCommand(ctx, hc.cmd);
    let failures = 0;
    let tries = 0;
    let last: ExecOutcome = { stdout: '', stderr: '', exit: 0 };
    const n = this.stepNo + 1;
    for (;;) {
      this.checkAborted();
      tries++;
      last = await this.exec(script, hc.timeoutMs);
      const healthy = last.exit === 0 && !last.timedOut;
      if (healthy) break;
      if (performance.now() - t0 >= hc.startPeriodMs) failures++;
      const outOfRetries = hc.retries > 0 && failures >= hc.retries;
      if (outOfRetries || performance.now() + hc.intervalMs > deadline) {
        await this.appendLog(this.healthEntry(n, hc, last, tries, false, t0), this.stepNo);
        const why = last.timedOut ? `timed out after ${hc.timeoutMs / 1000} s` : `exit code ${last.exit}`;
        throw new BuildFailure(
          `healthcheck failed: not healthy after ${tries} ${tries === 1 ? 'try' : 'tries'} (last: ${why}${last.stderr.trim() ? `: ${lastLine(last.stderr)}` : ''})`,
        );
      }
      // Aborting (cancel, shutdown) ends the wait at once: no timer outlives the build.
      await sleep(hc.intervalMs, undefined, { signal: this.signal }).catch(() => {});
    }
    await this.appendLog(this.healthEntry(n, hc, last, tries, true, t0), this.stepNo);
  }

  private healthEntry(
    n: number,
    hc: Healthcheck,
    r: ExecOutcome,
    tries: number,
    ok: boolean,
    t0: number,
  ): BuildLogEntry {
    return {
      step: n,
      phase: 'healthcheck',
      cmd: `HEALTHCHECK ${hc.cmd} (${tries} ${tries === 1 ? 'try' : 'tries'})`,
      stdout: tail(r.stdout),
      stderr: tail(r.stderr),
      exit: r.exit,
      ok,
      elapsed_ms: Math.round(performance.now() - t0),
    };
  }

  private async saveTemplate(
    snapshot: boolean,
    defaults: { user: string; env: Record<string, string> },
    startCommands: StartCommand[],
  ): Promise<BuildResult> {
    const live = this.live!;
    const templateId = newUuid();
    const req = { sandboxId: live.wireId, name: this.build.name, teamId: PLATFORM_UUID, templateId };
    let sizeBytes: number;
    try {
      if (snapshot) {
        sizeBytes = Number((await live.client.createSnapshot(req, { timeoutMs: TEMPLATE_TIMEOUT_MS })).sizeBytes);
      } else {
        // The agent destroys the capsule once its files are the template.
        sizeBytes = Number((await live.client.flattenRootfs(req, { timeoutMs: TEMPLATE_TIMEOUT_MS })).sizeBytes);
        this.capsuleGone = true;
        await this.markCapsuleStopped();
      }
    } catch (err) {
      throw new BuildFailure(`saving the template failed: ${agentError(err, live.host.id).message}`);
    }
    this.templateOnHost = templateId;
    return {
      templateId,
      type: snapshot ? 'snapshot' : 'base',
      sizeBytes,
      hostId: live.host.id,
      defaultUser: defaults.user,
      defaultEnv: defaults.env,
      startCommands,
    };
  }

  /** Removes template files written by this build that no row records (the build did not succeed). */
  async removeTemplateFiles(): Promise<void> {
    if (!this.templateOnHost || !this.live) return;
    const id = this.templateOnHost;
    this.templateOnHost = null;
    await this.live.client
      .deleteSnapshot(
        { name: this.build.name, teamId: PLATFORM_UUID, templateId: id },
        { timeoutMs: TEMPLATE_TIMEOUT_MS },
      )
      .catch((err: unknown) =>
        this.deps.log.error({ err, templateId: id }, 'build: removing unsaved template files failed'),
      );
  }

  private async markCapsuleStopped(): Promise<void> {
    await this.deps.db
      .updateTable('sandboxes')
      .set({ status: 'stopped', last_updated: new Date() })
      .where('id', '=', this.live!.row.id)
      // The host monitor may have seen it paused while its files were copied.
      .where('status', 'in', ['running', 'paused', 'missing'])
      .execute();
  }

  /** Destroys the build capsule, whatever happened. */
  async cleanup(): Promise<void> {
    if (!this.capsuleId || this.capsuleGone) return;
    await this.deps.capsules
      .destroy(PLATFORM_UUID, SYSTEM_ACTOR, this.capsuleId)
      .catch((err: unknown) => this.deps.log.warn({ err, build: this.wireId }, 'build: destroying the capsule failed'));
  }
}

interface ExecOutcome {
  stdout: string;
  stderr: string;
  exit: number;
  timedOut?: boolean;
  timeoutMs?: number;
}
