// SandboxManager: the in-memory table of this host's capsules and every
// operation on them. Lifecycle goes through the Runtime; processes, files
// and terminals go through each capsule's envd. Errors are ConnectErrors
// with the code the RPC layer returns as is.
import fs from 'node:fs/promises';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { PLATFORM_UUID } from '@wrenn/contracts';
import { EventType, FileType, type EntryInfo } from '@wrenn/contracts/gen/filesystem/filesystem_pb';
import {
  Signal,
  type ProcessEvent,
  type ProcessSelector,
  ProcessSelectorSchema,
} from '@wrenn/contracts/gen/process/process_pb';
import type { Layout } from './layout.js';
import { removeTree } from './runtime/mounts.js';
import type { CapsuleHandle, CapsuleSpec, RecoveredCapsule, Runtime } from './runtime/types.js';
import { EnvdClient } from './envd-client.js';
import {
  Code,
  ConnectError,
  alreadyExists,
  deadlineExceeded,
  failedPrecondition,
  internal,
  invalidArgument,
  isConnectionError,
  notFound,
  resourceExhausted,
  unavailable,
} from './errors.js';
import { MetricsSampler, type MetricRange, type MetricSample, type CapsuleMetrics } from './metrics.js';
import { TtlReaper, type ReapCandidate } from './reaper.js';
import {
  DEFAULTS,
  checkCapsuleId,
  checkCommand,
  checkEnv,
  checkPath,
  checkPtySize,
  checkResources,
  checkTag,
  checkTemplateName,
  checkTimeout,
  checkUser,
  checkUuidField,
} from './validate.js';

export type CapsuleState = 'running' | 'paused';

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface CreateParams {
  id: string;
  template: string;
  teamId: string;
  templateId: string;
  vcpus: number;
  memoryMb: number;
  diskSizeMb: number;
  timeoutSec: number;
  defaultUser?: string;
  defaultEnv?: Record<string, string>;
  /** Started in the background once envd is ready, tagged start-0, start-1, … */
  startCommands?: StartCommand[];
}

/** A built template's START step: run as `/bin/sh -c cmd` by every capsule made from it. */
export interface StartCommand {
  cmd: string;
  user: string;
  cwd: string;
  env: Record<string, string>;
}

/** A template cannot ask for more background processes than this. */
const MAX_START_COMMANDS = 32;

/** What the agent remembers about a capsule beyond the runtime's spec (persisted for restarts). */
interface CapsuleMeta {
  template: string;
  teamId: string;
  templateId: string;
  timeoutSec: number;
  createdAt: number;
  metadata: Record<string, string>;
}

export interface CapsuleInfo extends CapsuleMeta {
  id: string;
  state: CapsuleState;
  vcpus: number;
  memoryMb: number;
  diskSizeMb: number;
  hostIp: string;
  lastActiveAt: number;
}

interface Capsule extends CapsuleMeta {
  id: string;
  spec: CapsuleSpec;
  handle: CapsuleHandle;
  state: CapsuleState;
  lastActiveAt: number;
  envd: EnvdClient;
  lock: Lock;
  /** Operations in flight; the reaper leaves busy capsules alone. */
  busy: number;
}

export interface ProcessParams {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd: string;
  user: string;
}

export type ProcEvent =
  | { type: 'start'; pid: number }
  | { type: 'stdout' | 'stderr' | 'pty'; data: Uint8Array }
  | { type: 'end'; exitCode: number; error: string };

export type Selector = { pid: number } | { tag: string };

export type WatchOp = 'create' | 'write' | 'remove' | 'rename' | 'chmod';
export type WatchEvent = { type: 'started' } | { type: 'change'; name: string; op: WatchOp };

const WATCH_OPS: Partial<Record<EventType, WatchOp>> = {
  [EventType.CREATE]: 'create',
  [EventType.WRITE]: 'write',
  [EventType.REMOVE]: 'remove',
  [EventType.RENAME]: 'rename',
  [EventType.CHMOD]: 'chmod',
};

export interface FileInfo {
  name: string;
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'unknown';
  size: number;
  mode: number;
  permissions: string;
  owner: string;
  group: string;
  modifiedAt: number;
  symlinkTarget: string;
}

/** Serialises async sections (pause, resume, destroy of one capsule). */
class Lock {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => {});
    return result;
  }
}

export const STREAM_CHUNK = 64 * 1024;
/** Largest output a collected Exec or unary ReadFile returns; beyond it use the streamed RPCs. */
export const MAX_COLLECTED_BYTES = 64 * 1024 * 1024;
const ENVD_CALL_TIMEOUT_MS = 60_000;

export interface ManagerOptions {
  runtime: Runtime;
  layout: Layout;
  log: Logger;
  /** How long create/resume wait for envd's /health (default 30 s). */
  envdReadyTimeoutMs?: number;
  now?: () => number;
  metricsIntervalMs?: number;
  reaperIntervalMs?: number;
}

export class SandboxManager {
  private readonly capsules = new Map<string, Capsule>();
  /** Creates in flight: capsule id → the template directory it is being made from. */
  private readonly creating = new Map<string, string>();
  /** Deleted templates still used by capsules: directory → ids of those capsules (see deleteSnapshot). */
  private readonly retired = new Map<string, Set<string>>();
  private autoPaused: string[] = [];
  readonly sampler: MetricsSampler;
  readonly reaper: TtlReaper;
  private readonly runtime: Runtime;
  private readonly layout: Layout;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly envdReadyTimeoutMs: number;

  constructor(opts: ManagerOptions) {
    this.runtime = opts.runtime;
    this.layout = opts.layout;
    this.log = opts.log;
    this.now = opts.now ?? Date.now;
    this.envdReadyTimeoutMs = opts.envdReadyTimeoutMs ?? 30_000;
    this.sampler = new MetricsSampler({
      stats: (id) => this.runtime.stats(id),
      intervalMs: opts.metricsIntervalMs,
      now: this.now,
      onError: (id, err) => this.log.debug({ id, err }, 'metrics sample failed'),
    });
    this.reaper = new TtlReaper(
      {
        candidates: () => this.capsules.values() as Iterable<ReapCandidate>,
        pauseIfIdle: (id) => this.pauseIfIdle(id),
        destroy: (id) => this.destroy(id),
        onAutoPaused: (id) => {
          this.autoPaused.push(id);
          this.log.info({ id }, 'capsule auto-paused after its idle timeout');
        },
        log: this.log,
      },
      this.now,
      opts.reaperIntervalMs,
    );
  }

  /** Starts the metrics sampler and the TTL reaper. */
  start(): void {
    this.sampler.start();
    this.reaper.start();
  }

  /** Stops the timers and closes envd connections; capsules keep running (re-adopted on restart). */
  async stop(): Promise<void> {
    this.sampler.stop();
    await this.reaper.stop();
    for (const c of this.capsules.values()) c.envd.close();
  }

  // ---------------------------------------------------------------- lifecycle

  async create(p: CreateParams): Promise<CapsuleInfo> {
    const id = checkCapsuleId(p.id);
    const template = checkTemplateName(p.template);
    const teamId = checkUuidField('team_id', p.teamId);
    const templateId = checkUuidField('template_id', p.templateId);
    const res = checkResources(p);
    const defaultUser = checkUser(p.defaultUser ?? '', 'default_user');
    const defaultEnv = checkEnv(p.defaultEnv ?? {}, 'default_env');
    const startCommands = checkStartCommands(p.startCommands ?? []);
    if (this.capsules.has(id) || this.creating.has(id))
      throw alreadyExists(`capsule ${id} already exists on this host`);

    // Recorded before the template is looked up, so a concurrent DeleteSnapshot sees it in use.
    this.creating.set(id, path.resolve(this.layout.templateDir(teamId, templateId)));
    try {
      const templateDir = await this.resolveTemplate(template, teamId, templateId);
      const meta: CapsuleMeta = {
        template: template || (templateId === PLATFORM_UUID ? 'minimal' : ''),
        teamId,
        templateId,
        timeoutSec: res.timeoutSec,
        createdAt: this.now(),
        metadata: { runtime: this.runtime.name },
      };
      const spec: CapsuleSpec = {
        id,
        templateDir,
        vcpus: res.vcpus,
        memoryMb: res.memoryMb,
        diskSizeMb: res.diskSizeMb,
      };
      // The record is written first, so a crash during create leaves nothing the restart can't pair up.
      await this.writeMeta(id, meta);
      let handle: CapsuleHandle;
      const timings: Record<string, number> = {};
      try {
        const t0 = performance.now();
        handle = await this.runtime.create(spec);
        timings.runtime = performance.now() - t0;
      } catch (err) {
        await this.removeMeta(id);
        this.log.error({ id, err }, 'runtime create failed');
        throw runtimeCreateError(id, err);
      }
      const envd = new EnvdClient(handle.hostIp);
      try {
        const t1 = performance.now();
        await envd.waitReady(this.envdReadyTimeoutMs, () => processAlive(handle.pid));
        timings.envd = performance.now() - t1;
        if (defaultUser || Object.keys(defaultEnv).length) {
          await envd.init({ envVars: defaultEnv, ...(defaultUser ? { defaultUser } : {}) });
        }
        // Processes are not part of a template (no CRIU): its START commands run anew in every capsule.
        for (const [i, sc] of startCommands.entries()) {
          await startProcess(
            envd,
            { cmd: '/bin/sh', args: ['-c', sc.cmd], envs: sc.env, cwd: sc.cwd, user: sc.user },
            `start-${i}`,
          ).catch((err: unknown) => {
            throw new Error(`START command ${i} (${sc.cmd}) could not be started: ${(err as Error).message}`);
          });
        }
      } catch (err) {
        envd.close();
        this.log.error({ id, err }, 'capsule did not come up; destroying it');
        await this.runtime.destroy(id).catch((e) => this.log.error({ id, err: e }, 'rollback destroy failed'));
        await this.removeMeta(id);
        throw unavailable(`capsule ${id} did not become ready: ${(err as Error).message}`);
      }
      const now = this.now();
      const capsule: Capsule = {
        ...meta,
        id,
        spec,
        handle,
        state: 'running',
        lastActiveAt: now,
        envd,
        lock: new Lock(),
        busy: 0,
      };
      this.capsules.set(id, capsule);
      this.sampler.track(id, spec.vcpus);
      // envd loads its RPC services (~25 ms) on the first RPC: ask for it now, without waiting, so
      // they are loaded while the control plane answers, not when the user's first command comes.
      void envd.process.list({}, { timeoutMs: 10_000 }).catch(() => {});
      const ms = Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, Math.round(v)]));
      this.log.info({ id, template: meta.template, hostIp: handle.hostIp, ms }, 'capsule created');
      return info(capsule);
    } finally {
      this.creating.delete(id);
      if (!this.capsules.has(id)) await this.releaseRetired(id);
    }
  }

  /** Re-adopts a capsule the runtime recovered after an agent restart. */
  async adopt(rc: RecoveredCapsule): Promise<void> {
    const id = rc.spec.id;
    const meta = (await this.readMeta(id)) ?? {
      template: '',
      teamId: PLATFORM_UUID,
      templateId: PLATFORM_UUID,
      timeoutSec: 0,
      createdAt: this.now(),
      metadata: { runtime: this.runtime.name },
    };
    const capsule: Capsule = {
      ...meta,
      id,
      spec: rc.spec,
      handle: rc.handle,
      state: rc.state,
      lastActiveAt: this.now(),
      envd: new EnvdClient(rc.handle.hostIp),
      lock: new Lock(),
      busy: 0,
    };
    this.capsules.set(id, capsule);
    if (rc.state === 'running') this.sampler.track(id, rc.spec.vcpus);
    this.log.info({ id, state: rc.state }, 'capsule re-adopted');
  }

  /** Removes agent records of capsules that were not re-adopted. */
  async pruneMeta(): Promise<void> {
    let names: string[];
    try {
      names = await fs.readdir(this.layout.capsuleMetaDir);
    } catch {
      return;
    }
    for (const name of names) {
      const id = name.replace(/\.json(\.tmp)?$/, '');
      if (!this.capsules.has(id) || name.endsWith('.tmp')) {
        await fs.rm(`${this.layout.capsuleMetaDir}/${name}`, { force: true });
      }
    }
  }

  async destroy(idIn: string): Promise<void> {
    const id = checkCapsuleId(idIn);
    const c = this.capsules.get(id);
    if (!c) throw notFound(`capsule ${id} not found on this host`);
    await c.lock.run(async () => {
      if (this.capsules.get(id) !== c) throw notFound(`capsule ${id} not found on this host`);
      this.capsules.delete(id);
      this.sampler.remove(id);
      c.envd.close();
      try {
        await this.runtime.destroy(id);
      } catch (err) {
        this.log.error({ id, err }, 'destroy left traces; they are removed at the next agent start');
        throw internal(`capsule ${id} was stopped but cleaning up after it failed (details in the host agent log)`);
      } finally {
        await this.removeMeta(id);
        await this.releaseRetired(id);
      }
      this.log.info({ id }, 'capsule destroyed');
    });
  }

  async pause(idIn: string): Promise<void> {
    const c = this.get(idIn);
    await c.lock.run(async () => {
      this.ensureCurrent(c);
      if (c.state === 'paused') throw failedPrecondition(`capsule ${c.id} is already paused`);
      c.lastActiveAt = this.now();
      await this.doPause(c);
    });
  }

  private async doPause(c: Capsule): Promise<void> {
    this.sampler.untrack(c.id);
    try {
      await this.runtime.pause(c.id);
    } catch (err) {
      this.sampler.track(c.id, c.spec.vcpus);
      throw err;
    }
    c.state = 'paused';
    this.log.info({ id: c.id }, 'capsule paused');
  }

  /** Reaper path: pauses only if the capsule is still running and idle once the lock is held. */
  private async pauseIfIdle(id: string): Promise<boolean> {
    const c = this.capsules.get(id);
    if (!c) return false;
    return c.lock.run(async () => {
      if (this.capsules.get(id) !== c || c.state !== 'running' || c.busy > 0) return false;
      if (this.now() - c.lastActiveAt <= c.timeoutSec * 1000) return false;
      await this.doPause(c);
      return true;
    });
  }

  async resume(
    idIn: string,
    opts: { timeoutSec: number; defaultUser?: string; defaultEnv?: Record<string, string> },
  ): Promise<CapsuleInfo> {
    const timeoutSec = checkTimeout(opts.timeoutSec);
    const defaultUser = checkUser(opts.defaultUser ?? '', 'default_user');
    const defaultEnv = checkEnv(opts.defaultEnv ?? {}, 'default_env');
    const c = this.get(idIn);
    return c.lock.run(async () => {
      this.ensureCurrent(c);
      if (c.state !== 'paused') throw failedPrecondition(`capsule ${c.id} is not paused`);
      await this.runtime.resume(c.id);
      c.state = 'running';
      c.lastActiveAt = this.now();
      this.sampler.track(c.id, c.spec.vcpus);
      if (c.timeoutSec !== timeoutSec) {
        c.timeoutSec = timeoutSec;
        await this.writeMeta(c.id, metaOf(c));
      }
      if (defaultUser || Object.keys(defaultEnv).length) {
        await this.envdCall(c, () => c.envd.init({ envVars: defaultEnv, ...(defaultUser ? { defaultUser } : {}) }));
      }
      this.log.info({ id: c.id }, 'capsule resumed');
      return info(c);
    });
  }

  ping(idIn: string): void {
    this.use(idIn);
  }

  /** A new idle timeout (also for a paused capsule: it applies once resumed); the idle timer restarts now. */
  async setTimeout(idIn: string, timeoutSecIn: number): Promise<void> {
    const timeoutSec = checkTimeout(timeoutSecIn);
    const c = this.get(idIn);
    await c.lock.run(async () => {
      this.ensureCurrent(c);
      c.timeoutSec = timeoutSec;
      c.lastActiveAt = this.now();
      // Kept on disk, so a restarted agent re-adopts the capsule with its new timeout.
      await this.writeMeta(c.id, metaOf(c));
    });
  }

  list(): { capsules: CapsuleInfo[]; autoPaused: string[] } {
    const autoPaused = this.autoPaused;
    this.autoPaused = [];
    return { capsules: [...this.capsules.values()].map(info), autoPaused };
  }

  info(idIn: string): CapsuleInfo {
    return info(this.get(idIn));
  }

  counts(): { running: number; paused: number } {
    let running = 0;
    let paused = 0;
    for (const c of this.capsules.values()) {
      if (c.state === 'running') running++;
      else paused++;
    }
    return { running, paused };
  }

  /** Destroys every capsule (Terminate). Returns the ids whose destroy failed. */
  async destroyAll(): Promise<string[]> {
    const failed: string[] = [];
    await Promise.all(
      [...this.capsules.keys()].map((id) =>
        this.destroy(id).catch((err) => {
          if (err instanceof ConnectError && err.code === Code.NotFound) return;
          failed.push(id);
        }),
      ),
    );
    return failed;
  }

  // ---------------------------------------------------------------- templates (snapshots)

  /**
   * Writes the capsule's root file system (its upper layer merged over its
   * template) into a new template directory. The capsule is paused while the
   * files are copied, so the copy is one consistent moment, and resumed
   * afterwards if it was running. Memory and processes are not captured
   * (container runtime). The directory is written under a temporary name and
   * renamed into place, so a template directory is always whole.
   */
  async createSnapshot(p: {
    sandboxId: string;
    name: string;
    teamId: string;
    templateId: string;
  }): Promise<{ sizeBytes: number }> {
    return this.toNewTemplate(p, async (c, { name, teamId, templateId, dir, tmp }) => {
      const wasRunning = c.state === 'running';
      c.busy++;
      try {
        if (wasRunning) await this.doPause(c);
        try {
          const sizeBytes = await this.writeTemplate(c, tmp, dir, { name, type: 'snapshot', teamId, templateId });
          this.log.info({ id: c.id, name, templateId, sizeBytes }, 'snapshot template created');
          return { sizeBytes };
        } catch (err) {
          throw await this.templateError(c, tmp, err, 'snapshot');
        } finally {
          // A failed resume leaves the capsule paused (ListSandboxes says so); the snapshot stands.
          if (wasRunning) {
            await this.doResume(c).catch((err) => this.log.error({ id: c.id, err }, 'resume after snapshot failed'));
          }
        }
      } finally {
        c.busy--;
      }
    });
  }

  /**
   * An image-only template from a capsule (template builds without a
   * healthcheck): like createSnapshot, the merged root file system is copied
   * into a new template directory (written aside, renamed into place), with
   * template.json type `base`; then the capsule is destroyed, as the build is
   * over. On failure the capsule is left as it was.
   */
  async flattenRootfs(p: {
    sandboxId: string;
    name: string;
    teamId: string;
    templateId: string;
  }): Promise<{ sizeBytes: number }> {
    return this.toNewTemplate(p, async (c, { name, teamId, templateId, dir, tmp }) => {
      const wasRunning = c.state === 'running';
      let sizeBytes: number;
      c.busy++;
      try {
        if (wasRunning) await this.doPause(c);
        sizeBytes = await this.writeTemplate(c, tmp, dir, { name, type: 'base', teamId, templateId });
      } catch (err) {
        const e = await this.templateError(c, tmp, err, 'flatten');
        if (wasRunning) {
          await this.doResume(c).catch((re) => this.log.error({ id: c.id, err: re }, 'resume after flatten failed'));
        }
        throw e;
      } finally {
        c.busy--;
      }
      // The template stands; the capsule it came from is done.
      this.capsules.delete(c.id);
      this.sampler.remove(c.id);
      c.envd.close();
      try {
        await this.runtime.destroy(c.id);
      } catch (err) {
        this.log.error(
          { id: c.id, err },
          'destroy after flatten left traces; they are removed at the next agent start',
        );
      } finally {
        await this.removeMeta(c.id);
        await this.releaseRetired(c.id);
      }
      this.log.info({ id: c.id, name, templateId, sizeBytes }, 'base template flattened; capsule destroyed');
      return { sizeBytes };
    });
  }

  /**
   * Runs `fn` under the capsule's lock for a template that must not exist on
   * this host yet: its checked name and ids, its directory and the temporary
   * directory to write it in.
   */
  private async toNewTemplate<T>(
    p: { sandboxId: string; name: string; teamId: string; templateId: string },
    fn: (c: Capsule, t: { name: string; teamId: string; templateId: string; dir: string; tmp: string }) => Promise<T>,
  ): Promise<T> {
    const name = checkTemplateName(p.name);
    if (name === '') throw invalidArgument('name is required');
    const { teamId, templateId, dir } = this.snapshotDir(p.teamId, p.templateId);
    const c = this.get(p.sandboxId);
    return c.lock.run(async () => {
      this.ensureCurrent(c);
      if (await pathExists(dir)) throw alreadyExists(`template ${templateId} already exists on this host`);
      const tmp = this.layout.templateSibling(dir, 'tmp', randomBytes(4).toString('hex'));
      return fn(c, { name, teamId, templateId, dir, tmp });
    });
  }

  /**
   * The capsule's merged root file system and template.json, written into
   * `tmp` and renamed to `dir` (a template directory is always whole). The
   * capsule must be frozen meanwhile. Returns the template's size on disk.
   */
  private async writeTemplate(
    c: Capsule,
    tmp: string,
    dir: string,
    t: { name: string; type: 'snapshot' | 'base'; teamId: string; templateId: string },
  ): Promise<number> {
    await fs.mkdir(tmp, { recursive: true, mode: 0o755 });
    const { sizeBytes } = await this.runtime.exportRootfs(c.id, this.layout.templateRootfs(tmp));
    const meta = {
      name: t.name,
      type: t.type,
      team_id: t.teamId,
      template_id: t.templateId,
      source_capsule: c.id,
      source_template: c.template,
      created_at: new Date(this.now()).toISOString(),
      size_bytes: sizeBytes,
    };
    await fs.writeFile(this.layout.templateMeta(tmp), JSON.stringify(meta, null, 2) + '\n');
    await fs.rename(tmp, dir);
    return sizeBytes;
  }

  /** A failed writeTemplate: its half-written directory removed, the cause logged, a clear error for the caller. */
  private async templateError(
    c: Capsule,
    tmp: string,
    err: unknown,
    what: 'snapshot' | 'flatten',
  ): Promise<ConnectError> {
    await removeTree(tmp).catch((e) => this.log.error({ err: e, tmp }, `could not remove a failed ${what}`));
    if (err instanceof ConnectError) return err;
    this.log.error({ id: c.id, err }, `${what} failed`);
    if (/ENOSPC|no space left/i.test(String((err as Error).message))) {
      return resourceExhausted(
        `the host has no disk space left for the ${what === 'snapshot' ? 'snapshot' : 'template'}`,
      );
    }
    return internal(`${what} of capsule ${c.id} failed (details in the host agent log)`);
  }

  /**
   * Removes a template's files. Capsules made from it keep its files as their
   * lower layer, so while any exist on this host the directory is only renamed
   * aside (it no longer resolves) and removed when the last of them is destroyed.
   */
  async deleteSnapshot(p: { teamId: string; templateId: string }): Promise<void> {
    const { templateId, dir } = this.snapshotDir(p.teamId, p.templateId);
    if (!(await pathExists(dir))) throw notFound(`template ${templateId} not found on this host`);
    const trash = this.layout.templateSibling(dir, 'deleted', randomBytes(4).toString('hex'));
    await fs.rename(dir, trash);
    // After the rename no new create can resolve it; every user is now known.
    const users = this.templateUsers(dir);
    if (users.length === 0) {
      await removeTree(trash);
    } else {
      await fs.writeFile(path.join(trash, IN_USE_FILE), JSON.stringify(users));
      this.retired.set(trash, new Set(users));
    }
    this.log.info({ templateId, deferredFor: users }, 'template deleted');
  }

  /**
   * Agent start, after capsules were re-adopted: removes half-written snapshots
   * and deleted templates that no surviving capsule uses any more.
   */
  async sweepTemplates(): Promise<void> {
    const teams = await fs.readdir(this.layout.teamTemplatesDir).catch(() => [] as string[]);
    for (const team of teams) {
      const teamDir = path.join(this.layout.teamTemplatesDir, team);
      const names = await fs.readdir(teamDir).catch(() => [] as string[]);
      for (const name of names) {
        const full = path.join(teamDir, name);
        if (/^\.[0-9a-z]+\.tmp-[0-9a-f]+$/.test(name)) {
          await removeTree(full).catch((err) =>
            this.log.error({ err, dir: full }, 'could not remove a stale snapshot'),
          );
        } else if (/^\.[0-9a-z]+\.deleted-[0-9a-f]+$/.test(name)) {
          const listed = await fs
            .readFile(path.join(full, IN_USE_FILE), 'utf8')
            .then((t) => JSON.parse(t) as unknown)
            .catch(() => []);
          const users = (Array.isArray(listed) ? listed : []).filter(
            (id): id is string => typeof id === 'string' && this.capsules.has(id),
          );
          if (users.length) this.retired.set(full, new Set(users));
          else await removeTree(full).catch((err) => this.log.error({ err, dir: full }, 'could not remove a template'));
        }
      }
    }
  }

  private snapshotDir(teamIdIn: string, templateIdIn: string): { teamId: string; templateId: string; dir: string } {
    const teamId = checkUuidField('team_id', teamIdIn);
    const templateId = checkUuidField('template_id', templateIdIn);
    // The all-zero template id is the built-in minimal template: never written or removed here.
    if (templateId === PLATFORM_UUID)
      throw invalidArgument('template_id is required (and is not the built-in template)');
    return { teamId, templateId, dir: path.resolve(this.layout.templateDir(teamId, templateId)) };
  }

  /** Capsules on this host (and creates in flight) whose lower layer is `dir`. */
  private templateUsers(dir: string): string[] {
    const users = [...this.capsules.values()].filter((c) => path.resolve(c.spec.templateDir) === dir).map((c) => c.id);
    for (const [id, d] of this.creating) if (d === dir) users.push(id);
    return users;
  }

  /** A destroyed capsule no longer holds deleted templates. */
  private async releaseRetired(id: string): Promise<void> {
    for (const [trash, users] of this.retired) {
      if (!users.delete(id) || users.size > 0) continue;
      this.retired.delete(trash);
      await removeTree(trash).catch((err) =>
        this.log.error({ err, dir: trash }, 'could not remove a deleted template'),
      );
    }
  }

  private async doResume(c: Capsule): Promise<void> {
    await this.runtime.resume(c.id);
    c.state = 'running';
    c.lastActiveAt = this.now();
    this.sampler.track(c.id, c.spec.vcpus);
  }

  // ---------------------------------------------------------------- processes

  /** Runs a command to completion and returns its output (binary-safe, capped). */
  async exec(
    idIn: string,
    p: ProcessParams & { timeoutSec: number; stdin?: Uint8Array },
    signal?: AbortSignal,
  ): Promise<{ stdout: Uint8Array; stderr: Uint8Array; exitCode: number; durationMs: number }> {
    const started = this.now();
    const stdout: Uint8Array[] = [];
    const stderr: Uint8Array[] = [];
    let total = 0;
    let end: { exitCode: number; error: string } | null = null;
    const ac = new AbortController();
    const onAbort = () => ac.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const ev of this.execStream(
        idIn,
        { ...p, timeoutSec: p.timeoutSec || DEFAULTS.execTimeoutSec },
        ac.signal,
      )) {
        if (ev.type === 'stdout' || ev.type === 'pty') stdout.push(ev.data);
        else if (ev.type === 'stderr') stderr.push(ev.data);
        else if (ev.type === 'end') end = ev;
        if (ev.type !== 'start' && ev.type !== 'end') {
          total += ev.data.length;
          if (total > MAX_COLLECTED_BYTES) {
            throw resourceExhausted(
              `command output exceeds ${MAX_COLLECTED_BYTES / 1024 / 1024} MiB; the process was killed (use ExecStream for large output)`,
            );
          }
        }
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    if (!end) throw unavailable(`capsule ${idIn}: the command's output stream ended without an exit status`);
    if (end.error && end.exitCode === 0 && /EAGAIN|resource temporarily unavailable/i.test(end.error)) {
      throw resourceExhausted(`capsule ${idIn} cannot start more processes: ${end.error}`);
    }
    return {
      stdout: Buffer.concat(stdout),
      stderr: Buffer.concat(stderr),
      exitCode: end.exitCode,
      durationMs: this.now() - started,
    };
  }

  /**
   * Runs a command and yields its events as they come. Stopping the iteration
   * early (client gone, timeout) kills the process: nobody can read it any more.
   */
  async *execStream(
    idIn: string,
    p: ProcessParams & { timeoutSec: number; stdin?: Uint8Array },
    signal?: AbortSignal,
  ): AsyncGenerator<ProcEvent> {
    checkProcess(p);
    checkTimeout(p.timeoutSec);
    const c = this.use(idIn);
    const ac = new AbortController();
    const onAbort = () => ac.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    let timedOut = false;
    const timer =
      p.timeoutSec > 0
        ? setTimeout(() => {
            timedOut = true;
            ac.abort();
          }, p.timeoutSec * 1000)
        : null;
    const wantStdin = p.stdin !== undefined && p.stdin.length > 0;
    let pid = 0;
    let ended = false;
    c.busy++;
    try {
      const stream = c.envd.process.start(
        {
          process: { cmd: p.cmd, args: p.args, envs: p.envs, ...(p.cwd ? { cwd: p.cwd } : {}) },
          stdin: wantStdin,
        },
        { signal: ac.signal, headers: EnvdClient.userHeaders(p.user) },
      );
      for await (const res of this.envdStream(c, stream)) {
        const ev = toProcEvent(res.event);
        if (!ev) continue;
        c.lastActiveAt = this.now();
        if (ev.type === 'start') {
          pid = ev.pid;
          if (wantStdin) await this.feedStdin(c, pid, p.stdin!, p.user);
        }
        if (ev.type === 'end') ended = true;
        yield ev;
      }
    } catch (err) {
      if (timedOut) throw deadlineExceeded(`command timed out after ${p.timeoutSec} s and was killed`);
      throw err;
    } finally {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      ac.abort();
      c.busy--;
      if (pid && !ended) this.killQuietly(c, { pid });
    }
    if (timedOut && !ended) throw deadlineExceeded(`command timed out after ${p.timeoutSec} s and was killed`);
  }

  private async feedStdin(c: Capsule, pid: number, data: Uint8Array, user: string): Promise<void> {
    const selector = selectorOf({ pid });
    const headers = EnvdClient.userHeaders(user);
    await this.envdCall(c, async () => {
      for (let off = 0; off < data.length; off += STREAM_CHUNK) {
        await c.envd.process.sendInput(
          { process: selector, input: { input: { case: 'stdin', value: data.subarray(off, off + STREAM_CHUNK) } } },
          { headers, timeoutMs: ENVD_CALL_TIMEOUT_MS },
        );
      }
      await c.envd.process.closeStdin({ process: selector }, { headers, timeoutMs: ENVD_CALL_TIMEOUT_MS });
    });
  }

  private killQuietly(c: Capsule, sel: Selector): void {
    c.envd.process
      .sendSignal({ process: selectorOf(sel), signal: Signal.SIGKILL }, { timeoutMs: 5000 })
      .catch(() => {});
  }

  /** Starts a process that outlives the call; returns once envd reports its pid. */
  async startBackground(idIn: string, p: ProcessParams & { tag: string }): Promise<{ pid: number; tag: string }> {
    checkProcess(p);
    const tag = p.tag ? checkTag(p.tag) : `proc-${randomBytes(4).toString('hex')}`;
    const c = this.use(idIn);
    c.busy++;
    try {
      return await this.envdCall(c, () => startProcess(c.envd, p, tag));
    } finally {
      c.busy--;
    }
  }

  async listProcesses(idIn: string): Promise<{ pid: number; tag: string; cmd: string; args: string[] }[]> {
    const c = this.use(idIn);
    const res = await this.envdCall(c, () => c.envd.process.list({}, { timeoutMs: ENVD_CALL_TIMEOUT_MS }));
    return res.processes.map((p) => ({
      pid: p.pid,
      tag: p.tag ?? '',
      cmd: p.config?.cmd ?? '',
      args: p.config?.args ?? [],
    }));
  }

  async killProcess(idIn: string, sel: Selector, signalName: string): Promise<void> {
    const signal = parseSignal(signalName);
    const selector = checkSelector(sel);
    const c = this.use(idIn);
    await this.envdCall(c, () =>
      c.envd.process.sendSignal({ process: selector, signal }, { timeoutMs: ENVD_CALL_TIMEOUT_MS }),
    );
  }

  /** Follows a running process's output (no replay). Leaving does not stop the process. */
  async *connectProcess(idIn: string, sel: Selector, signal?: AbortSignal): AsyncGenerator<ProcEvent> {
    const selector = checkSelector(sel);
    const c = this.use(idIn);
    yield* this.follow(c, (s) => c.envd.process.connect({ process: selector }, { signal: s }), signal);
  }

  private async *follow(
    c: Capsule,
    open: (signal: AbortSignal) => AsyncIterable<{ event?: ProcessEvent }>,
    signal?: AbortSignal,
  ): AsyncGenerator<ProcEvent> {
    const ac = new AbortController();
    const onAbort = () => ac.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    c.busy++;
    try {
      for await (const res of this.envdStream(c, open(ac.signal))) {
        const ev = toProcEvent(res.event);
        if (!ev) continue;
        c.lastActiveAt = this.now();
        yield ev;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      ac.abort();
      c.busy--;
    }
  }

  // ---------------------------------------------------------------- terminals

  /**
   * Starts a PTY under `tag` (cmd given) or re-attaches to it (cmd empty) and
   * yields its output. The PTY survives this stream ending; PtyKill ends it.
   */
  async *ptyAttach(
    idIn: string,
    p: ProcessParams & { tag: string; cols: number; rows: number },
    signal?: AbortSignal,
  ): AsyncGenerator<ProcEvent> {
    const tag = checkTag(p.tag);
    const c = this.use(idIn);
    if (p.cmd === '') {
      yield* this.follow(c, (s) => c.envd.process.connect({ process: selectorOf({ tag }) }, { signal: s }), signal);
      return;
    }
    checkProcess(p);
    checkPtySize(p.cols, p.rows);
    yield* this.follow(
      c,
      (s) =>
        c.envd.process.start(
          {
            process: { cmd: p.cmd, args: p.args, envs: p.envs, ...(p.cwd ? { cwd: p.cwd } : {}) },
            pty: { size: { cols: p.cols, rows: p.rows } },
            tag,
            stdin: true,
          },
          { signal: s, headers: EnvdClient.userHeaders(p.user) },
        ),
      signal,
    );
  }

  async ptySendInput(idIn: string, tagIn: string, data: Uint8Array): Promise<void> {
    const tag = checkTag(tagIn);
    const c = this.use(idIn);
    await this.envdCall(c, () =>
      c.envd.process.sendInput(
        { process: selectorOf({ tag }), input: { input: { case: 'pty', value: data } } },
        { timeoutMs: ENVD_CALL_TIMEOUT_MS },
      ),
    );
  }

  async ptyResize(idIn: string, tagIn: string, cols: number, rows: number): Promise<void> {
    const tag = checkTag(tagIn);
    checkPtySize(cols, rows);
    const c = this.use(idIn);
    await this.envdCall(c, () =>
      c.envd.process.update(
        { process: selectorOf({ tag }), pty: { size: { cols, rows } } },
        { timeoutMs: ENVD_CALL_TIMEOUT_MS },
      ),
    );
  }

  async ptyKill(idIn: string, tagIn: string): Promise<void> {
    const tag = checkTag(tagIn);
    const c = this.use(idIn);
    await this.envdCall(c, () =>
      c.envd.process.sendSignal(
        { process: selectorOf({ tag }), signal: Signal.SIGKILL },
        { timeoutMs: ENVD_CALL_TIMEOUT_MS },
      ),
    );
  }

  // ---------------------------------------------------------------- files

  async readFile(idIn: string, pathIn: string, user: string): Promise<Uint8Array> {
    const path = checkPath(pathIn);
    checkUser(user);
    const c = this.use(idIn);
    const res = await this.envdCall(c, () => c.envd.readFile(path, user));
    const length = Number(res.headers['content-length']);
    if (length > MAX_COLLECTED_BYTES) {
      res.destroy();
      throw resourceExhausted(`${path} is larger than ${MAX_COLLECTED_BYTES / 1024 / 1024} MiB; use ReadFileStream`);
    }
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        total += chunk.length;
        if (total > MAX_COLLECTED_BYTES) {
          res.destroy();
          throw resourceExhausted(
            `${path} is larger than ${MAX_COLLECTED_BYTES / 1024 / 1024} MiB; use ReadFileStream`,
          );
        }
        chunks.push(chunk);
      }
    } catch (err) {
      throw this.envdError(c, err);
    }
    return Buffer.concat(chunks);
  }

  /** Yields the file in chunks of at most 64 KiB, as envd sends it; never holds the whole file. */
  async *readFileStream(idIn: string, pathIn: string, user: string, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    const path = checkPath(pathIn);
    checkUser(user);
    const c = this.use(idIn);
    c.busy++;
    try {
      const res = await this.envdCall(c, () => c.envd.readFile(path, user, signal));
      try {
        let pending: Buffer[] = [];
        let pendingLen = 0;
        for await (const chunk of res as AsyncIterable<Buffer>) {
          c.lastActiveAt = this.now();
          let buf = chunk;
          while (pendingLen + buf.length >= STREAM_CHUNK) {
            const take = STREAM_CHUNK - pendingLen;
            pending.push(buf.subarray(0, take));
            yield Buffer.concat(pending);
            buf = buf.subarray(take);
            pending = [];
            pendingLen = 0;
          }
          if (buf.length) {
            pending.push(buf);
            pendingLen += buf.length;
          }
        }
        if (pendingLen) yield Buffer.concat(pending);
      } catch (err) {
        throw this.envdError(c, err);
      } finally {
        res.destroy();
      }
    } finally {
      c.busy--;
    }
  }

  async writeFile(idIn: string, pathIn: string, user: string, content: Uint8Array): Promise<void> {
    const path = checkPath(pathIn);
    checkUser(user);
    const c = this.use(idIn);
    await this.envdCall(c, () => c.envd.writeFile(path, user, content));
  }

  /** Streams `source` into the file; the capsule is checked before the first byte is read. */
  async writeFileStream(
    idIn: string,
    pathIn: string,
    user: string,
    source: AsyncIterable<Uint8Array>,
    signal?: AbortSignal,
  ): Promise<void> {
    const path = checkPath(pathIn);
    checkUser(user);
    const c = this.use(idIn);
    const now = this.now;
    async function* touching(): AsyncGenerator<Uint8Array> {
      for await (const chunk of source) {
        c.lastActiveAt = now();
        yield chunk;
      }
    }
    c.busy++;
    try {
      await this.envdCall(c, () => c.envd.writeFile(path, user, touching(), signal));
    } finally {
      c.busy--;
    }
  }

  async listDir(idIn: string, pathIn: string, depth: number, user: string): Promise<FileInfo[]> {
    const path = checkPath(pathIn);
    checkUser(user);
    if (!Number.isInteger(depth) || depth < 0 || depth > 32) throw invalidArgument('depth must be between 0 and 32');
    const c = this.use(idIn);
    const res = await this.envdCall(c, () =>
      c.envd.filesystem.listDir(
        { path, depth },
        { headers: EnvdClient.userHeaders(user), timeoutMs: ENVD_CALL_TIMEOUT_MS },
      ),
    );
    return res.entries.map(fileInfo);
  }

  /**
   * Changes under a directory until `signal` aborts (or the directory goes).
   * Watching is not activity: a capsule nobody uses is still auto-paused
   * (its watchers then hear nothing until it is resumed).
   */
  async *watchDir(
    idIn: string,
    pathIn: string,
    recursive: boolean,
    user: string,
    signal?: AbortSignal,
  ): AsyncGenerator<WatchEvent> {
    const path = checkPath(pathIn);
    checkUser(user);
    const c = this.use(idIn);
    const stream = c.envd.filesystem.watchDir({ path, recursive }, { signal, headers: EnvdClient.userHeaders(user) });
    for await (const res of this.envdStream(c, stream)) {
      const e = res.event;
      if (e.case === 'start') yield { type: 'started' };
      else if (e.case === 'filesystem') {
        const op = WATCH_OPS[e.value.type];
        if (op) yield { type: 'change', name: e.value.name, op };
      }
    }
  }

  async makeDir(idIn: string, pathIn: string, user: string): Promise<FileInfo | null> {
    const path = checkPath(pathIn);
    checkUser(user);
    const c = this.use(idIn);
    const res = await this.envdCall(c, () =>
      c.envd.filesystem.makeDir({ path }, { headers: EnvdClient.userHeaders(user), timeoutMs: ENVD_CALL_TIMEOUT_MS }),
    );
    return res.entry ? fileInfo(res.entry) : null;
  }

  async remove(idIn: string, pathIn: string, user: string): Promise<void> {
    const path = checkPath(pathIn);
    checkUser(user);
    const c = this.use(idIn);
    await this.envdCall(c, () =>
      c.envd.filesystem.remove({ path }, { headers: EnvdClient.userHeaders(user), timeoutMs: ENVD_CALL_TIMEOUT_MS }),
    );
  }

  // ---------------------------------------------------------------- metrics

  getMetrics(idIn: string, range: MetricRange): MetricSample[] {
    return this.metricsOf(idIn).query(range, this.now());
  }

  flushMetrics(idIn: string): { raw: MetricSample[]; mid: MetricSample[]; long: MetricSample[] } {
    return this.metricsOf(idIn).flush();
  }

  private metricsOf(idIn: string): CapsuleMetrics {
    const id = checkCapsuleId(idIn);
    if (!this.capsules.has(id)) throw notFound(`capsule ${id} not found on this host`);
    const store = this.sampler.store(id);
    if (!store) throw notFound(`capsule ${id} has no metrics`);
    return store;
  }

  // ---------------------------------------------------------------- helpers

  private get(idIn: string): Capsule {
    const id = checkCapsuleId(idIn);
    const c = this.capsules.get(id);
    if (!c) throw notFound(`capsule ${id} not found on this host`);
    return c;
  }

  /** A running capsule, its idle timer reset. */
  private use(idIn: string): Capsule {
    const c = this.get(idIn);
    if (c.state === 'paused') throw failedPrecondition(`capsule ${c.id} is paused; resume it first`);
    c.lastActiveAt = this.now();
    return c;
  }

  private ensureCurrent(c: Capsule): void {
    if (this.capsules.get(c.id) !== c) throw notFound(`capsule ${c.id} not found on this host`);
  }

  private async envdCall<T>(c: Capsule, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.envdError(c, err);
    }
  }

  private async *envdStream<T>(c: Capsule, stream: AsyncIterable<T>): AsyncGenerator<T> {
    try {
      yield* stream;
    } catch (err) {
      throw this.envdError(c, err);
    }
  }

  /** Turns a failure talking to envd into an error the caller can act on. */
  private envdError(c: Capsule, err: unknown): ConnectError {
    if (this.capsules.get(c.id) !== c) return notFound(`capsule ${c.id} was destroyed`);
    if (c.state === 'paused') return failedPrecondition(`capsule ${c.id} was paused during the operation`);
    const ce = err instanceof ConnectError ? err : null;
    if (isConnectionError(err) || ce?.code === Code.Unavailable || (ce?.code === Code.Aborted && ce.cause)) {
      this.log.warn({ id: c.id, err }, 'envd unreachable');
      return unavailable(
        `capsule ${c.id} is not responding: its envd cannot be reached (${ce?.rawMessage ?? (err as Error).message})`,
      );
    }
    if (ce) {
      if (/EAGAIN|resource temporarily unavailable/i.test(ce.rawMessage)) {
        return resourceExhausted(
          `capsule ${c.id} cannot start more processes (process limit reached): ${ce.rawMessage}`,
        );
      }
      return ce;
    }
    this.log.error({ id: c.id, err }, 'unexpected error talking to envd');
    return internal(`capsule ${c.id}: unexpected error talking to envd`);
  }

  private async resolveTemplate(name: string, teamId: string, templateId: string): Promise<string> {
    const label = name || templateId;
    if (teamId === PLATFORM_UUID && templateId === PLATFORM_UUID && name !== '' && name !== 'minimal') {
      throw notFound(`template "${name}" not found: without a template_id only "minimal" is built in`);
    }
    const dir = this.layout.templateDir(teamId, templateId);
    const rootfs = this.layout.templateRootfs(dir);
    const st = await fs.stat(rootfs).catch(() => null);
    if (!st?.isDirectory()) throw notFound(`template "${label || 'minimal'}" not found on this host`);
    return dir;
  }

  private async writeMeta(id: string, meta: CapsuleMeta): Promise<void> {
    const file = this.layout.capsuleMetaFile(id);
    await fs.mkdir(this.layout.capsuleMetaDir, { recursive: true });
    await fs.writeFile(file + '.tmp', JSON.stringify(meta));
    await fs.rename(file + '.tmp', file);
  }

  private async readMeta(id: string): Promise<CapsuleMeta | null> {
    try {
      const m = JSON.parse(await fs.readFile(this.layout.capsuleMetaFile(id), 'utf8')) as Partial<CapsuleMeta>;
      return {
        template: String(m.template ?? ''),
        teamId: String(m.teamId ?? PLATFORM_UUID),
        templateId: String(m.templateId ?? PLATFORM_UUID),
        timeoutSec: Number(m.timeoutSec ?? 0),
        createdAt: Number(m.createdAt ?? this.now()),
        metadata: { ...(m.metadata ?? {}) },
      };
    } catch {
      return null;
    }
  }

  private async removeMeta(id: string): Promise<void> {
    await fs.rm(this.layout.capsuleMetaFile(id), { force: true }).catch(() => {});
  }
}

/** Lists, inside a deleted template's directory, the capsules that still use it. */
const IN_USE_FILE = '.in-use.json';

async function pathExists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}

/** A failed Runtime.create as the caller should see it (the runtime rolled everything back). */
function runtimeCreateError(id: string, err: unknown): ConnectError {
  const e = err instanceof Error ? err : new Error(String(err));
  if (e.name === 'CapsuleExistsError') return alreadyExists(`capsule ${id} already exists on this host`);
  if (/network slots are in use/.test(e.message)) {
    return resourceExhausted(`this host cannot take more capsules: ${e.message}`);
  }
  if (/ENOSPC|no space left/i.test(e.message))
    return resourceExhausted('the host has no disk space left for a new capsule');
  return internal(`failed to create capsule ${id} (details in the host agent log)`);
}

function metaOf(c: Capsule): CapsuleMeta {
  return {
    template: c.template,
    teamId: c.teamId,
    templateId: c.templateId,
    timeoutSec: c.timeoutSec,
    createdAt: c.createdAt,
    metadata: c.metadata,
  };
}

function info(c: Capsule): CapsuleInfo {
  return {
    ...metaOf(c),
    id: c.id,
    state: c.state,
    vcpus: c.spec.vcpus,
    memoryMb: c.spec.memoryMb,
    diskSizeMb: c.spec.diskSizeMb,
    hostIp: c.handle.hostIp,
    lastActiveAt: c.lastActiveAt,
  };
}

function checkProcess(p: ProcessParams): void {
  checkCommand(p.cmd, p.args);
  checkEnv(p.envs);
  checkUser(p.user);
  if (p.cwd !== '') checkPath(p.cwd, 'cwd');
}

function checkSelector(sel: Selector): ProcessSelector {
  if ('pid' in sel) {
    if (!Number.isInteger(sel.pid) || sel.pid <= 0) throw invalidArgument('pid must be a positive integer');
  } else checkTag(sel.tag);
  return selectorOf(sel);
}

function selectorOf(sel: Selector): ProcessSelector {
  return create(ProcessSelectorSchema, {
    selector: 'pid' in sel ? { case: 'pid', value: sel.pid } : { case: 'tag', value: sel.tag },
  });
}

function parseSignal(name: string): Signal {
  switch (name) {
    case '':
    case 'SIGKILL':
      return Signal.SIGKILL;
    case 'SIGTERM':
      return Signal.SIGTERM;
    default:
      throw invalidArgument(`signal must be SIGKILL or SIGTERM, got "${name}"`);
  }
}

function toProcEvent(ev: ProcessEvent | undefined): ProcEvent | null {
  const e = ev?.event;
  switch (e?.case) {
    case 'start':
      return { type: 'start', pid: e.value.pid };
    case 'data': {
      const o = e.value.output;
      if (o.case === 'stdout' || o.case === 'stderr' || o.case === 'pty') return { type: o.case, data: o.value };
      return null;
    }
    case 'end':
      return {
        type: 'end',
        exitCode: e.value.exitCode,
        error: e.value.error ?? (e.value.exited ? '' : e.value.status),
      };
    default:
      return null;
  }
}

const FILE_TYPES: Record<number, FileInfo['type']> = {
  [FileType.FILE]: 'file',
  [FileType.DIRECTORY]: 'directory',
  [FileType.SYMLINK]: 'symlink',
};

function fileInfo(e: EntryInfo): FileInfo {
  return {
    name: e.name,
    path: e.path,
    type: FILE_TYPES[e.type] ?? 'unknown',
    size: Number(e.size),
    mode: e.mode,
    permissions: e.permissions,
    owner: e.owner,
    group: e.group,
    modifiedAt: e.modifiedTime ? Math.floor(timestampMs(e.modifiedTime) / 1000) : 0,
    symlinkTarget: e.symlinkTarget ?? '',
  };
}

/** True while the host process exists and is not a zombie. */
function processAlive(pid: number): boolean {
  if (!(pid > 0)) return true; // the runtime gave no pid: rely on the deadline
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Field 3, after "pid (comm)"; comm may contain spaces and parentheses.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function checkStartCommands(list: StartCommand[]): StartCommand[] {
  if (list.length > MAX_START_COMMANDS) {
    throw invalidArgument(`start_commands: at most ${MAX_START_COMMANDS} commands, got ${list.length}`);
  }
  return list.map((sc, i) => {
    if (!sc.cmd) throw invalidArgument(`start_commands[${i}].cmd is required`);
    checkProcess({ cmd: '/bin/sh', args: ['-c', sc.cmd], envs: sc.env, cwd: sc.cwd, user: sc.user });
    return sc;
  });
}

/** Starts a process in envd under `tag` and returns once envd reports its pid; it keeps running. */
async function startProcess(envd: EnvdClient, p: ProcessParams, tag: string): Promise<{ pid: number; tag: string }> {
  const ac = new AbortController();
  // Not a request deadline: envd would take it as the process's time limit.
  const timer = setTimeout(() => ac.abort(), ENVD_CALL_TIMEOUT_MS);
  try {
    const stream = envd.process.start(
      {
        process: { cmd: p.cmd, args: p.args, envs: p.envs, ...(p.cwd ? { cwd: p.cwd } : {}) },
        tag,
        stdin: false,
      },
      { signal: ac.signal, headers: EnvdClient.userHeaders(p.user) },
    );
    for await (const res of stream) {
      const ev = toProcEvent(res.event);
      if (ev?.type === 'start') return { pid: ev.pid, tag };
      if (ev?.type === 'end') break;
    }
    throw unavailable('envd did not report the started process');
  } finally {
    // Closing the stream leaves the process running in envd.
    clearTimeout(timer);
    ac.abort();
  }
}
