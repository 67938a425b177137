// The container runtime: each capsule is a runc container in its own mount,
// PID, IPC, UTS and network namespaces, with cgroup limits, Docker's default
// capabilities, no-new-privileges and a seccomp filter. Its root is an
// overlay of the template's rootfs (read-only, shared) and an upper layer on
// the capsule's own sparse ext4 image (its disk limit). See DESIGN.md §3.
//
// Every create step registers its undo before the next step runs, so a
// failure anywhere removes exactly what was made. A capsule becomes
// recoverable when its state.json is written, the last step of create; at
// start, recover() adopts those whose container still runs and removes every
// other trace this agent (its prefix, its data directory) left on the host.
import fs from 'node:fs/promises';
import path from 'node:path';
import { isSafeName } from '@wrenn/contracts';
import type { Layout } from '../layout.js';
import type { CapsuleHandle, CapsuleSpec, CapsuleStats, RecoveredCapsule, Runtime, RuntimeState } from './types.js';
import { run, runStatus } from './exec.js';
import { removeTree, unmount, mountsUnder, readMounts } from './mounts.js';
import { NetworkManager, type CapsuleNetwork } from './network.js';
import { capsuleNofile, ociConfig } from './oci.js';
import {
  cgroupDir,
  cgroupParent,
  hierarchies,
  listCapsuleCgroups,
  removeParents,
  readStats,
  removeCgroup,
  swapAccounting,
} from './cgroups.js';
import {
  DiskCache,
  MIN_DISK_MB,
  allLoopDevices,
  allocatedBytes,
  detachLoop,
  loopDevicesOf,
  mountImage,
  mountOverlay,
} from './disk.js';
import { capsuleHostname, capsuleHosts, hostResolvConf } from './etc-files.js';
import { DEFAULT_ENVD_BUNDLE, stageEnvd } from './envd-stage.js';

export interface RuntimeLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface ContainerRuntimeOptions {
  layout: Layout;
  /** Names every host object of this agent (netns, veths, chains, cgroups): 1-4 of [a-z0-9], starting with a letter. */
  netPrefix: string;
  /** IPv4 CIDR the capsules' /30s are carved from; another agent on the host uses another. */
  subnet: string;
  /** Maximum number of processes per capsule (default 1024). */
  pidsLimit?: number;
  log: RuntimeLogger;
  /** The envd bundle to stage (default: packages/envd/bundle/envd.mjs of this repository). */
  envdBundle?: string;
  runc?: string;
}

export class CapsuleNotFoundError extends Error {
  override name = 'CapsuleNotFoundError';
  constructor(readonly id: string) {
    super(`capsule ${id} not found`);
  }
}

export class CapsuleExistsError extends Error {
  override name = 'CapsuleExistsError';
  constructor(readonly id: string) {
    super(`capsule ${id} already exists`);
  }
}

/** The spec cannot be satisfied (bad value, unknown template); nothing was made. */
export class InvalidSpecError extends Error {
  override name = 'InvalidSpecError';
}

interface SavedState {
  version: 1;
  spec: CapsuleSpec;
  handle: CapsuleHandle;
  slot: number;
  createdAt: string;
}

interface Capsule {
  spec: CapsuleSpec;
  handle: CapsuleHandle;
  net: CapsuleNetwork;
  state: RuntimeState;
}

const STATE_VERSION = 1;
const MAX_DISK_MB = 1024 * 1024;
const MAX_MEMORY_MB = 1024 * 1024;

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

async function pathExists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** Writes a file via a temporary name, so a reader (or a crash) never sees half of it. */
async function writeAtomic(file: string, content: string): Promise<void> {
  const tmp = `${file}.tmp`;
  await fs.writeFile(tmp, content);
  await fs.rename(tmp, file);
}

export class ContainerRuntime implements Runtime {
  readonly name = 'container';
  readonly layout: Layout;
  readonly net: NetworkManager;
  readonly prefix: string;
  readonly pidsLimit: number;
  /** Milliseconds spent in each step of the last successful create (for benchmarks). */
  lastCreateTimings: Record<string, number> = {};

  private readonly log: RuntimeLogger;
  private readonly runcBin: string;
  private readonly envdBundle: string;
  private readonly disks: DiskCache;
  private readonly capsules = new Map<string, Capsule>();
  /** Ids with an operation in progress, so create/destroy/pause of one capsule never interleave. */
  private readonly locks = new Map<string, Promise<unknown>>();
  private resolvConf: Promise<string> | undefined;
  private swap: Promise<boolean> | undefined;
  private nofile: Promise<number> | undefined;

  constructor(opts: ContainerRuntimeOptions) {
    this.layout = opts.layout;
    this.prefix = opts.netPrefix;
    this.log = opts.log;
    this.net = new NetworkManager({ prefix: opts.netPrefix, subnet: opts.subnet, log: opts.log });
    this.pidsLimit = opts.pidsLimit ?? 1024;
    if (!Number.isInteger(this.pidsLimit) || this.pidsLimit < 8) throw new Error('pidsLimit must be an integer >= 8');
    this.runcBin = opts.runc ?? 'runc';
    this.envdBundle = opts.envdBundle ?? DEFAULT_ENVD_BUNDLE;
    this.disks = new DiskCache(this.layout.diskCacheDir, (err) =>
      this.log.warn({ err: message(err) }, 'could not make a spare disk image'),
    );
  }

  /** Copies node, tini, envd and node-pty into the directory every capsule mounts at /opt/wrenn. */
  async stageEnvd(): Promise<void> {
    const copied = await stageEnvd({ envdDir: this.layout.envdDir, envdBundle: this.envdBundle });
    if (copied) this.log.info({ dir: this.layout.envdDir, copied }, 'envd bundle staged');
  }

  /** The capsule ids this runtime currently runs. */
  list(): string[] {
    return [...this.capsules.keys()];
  }

  private async withLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(fn);
    this.locks.set(id, next);
    try {
      return await next;
    } finally {
      if (this.locks.get(id) === next) this.locks.delete(id);
    }
  }

  private runc(args: string[], opts: Parameters<typeof run>[2] = {}): Promise<string> {
    return run(this.runcBin, ['--root', this.layout.runcRoot, ...args], opts);
  }

  private cgroupsPath(id: string): string {
    return `/${cgroupParent(this.prefix)}/${id}`;
  }

  private async validate(spec: CapsuleSpec): Promise<string> {
    if (!isSafeName(spec.id) || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(spec.id)) {
      throw new InvalidSpecError(`invalid capsule id "${spec.id}"`);
    }
    if (!(spec.vcpus > 0 && spec.vcpus <= 256))
      throw new InvalidSpecError(`vcpus must be in (0, 256], got ${spec.vcpus}`);
    if (!Number.isInteger(spec.memoryMb) || spec.memoryMb < 16 || spec.memoryMb > MAX_MEMORY_MB) {
      throw new InvalidSpecError(`memoryMb must be an integer in 16..${MAX_MEMORY_MB}, got ${spec.memoryMb}`);
    }
    if (!Number.isInteger(spec.diskSizeMb) || spec.diskSizeMb < MIN_DISK_MB || spec.diskSizeMb > MAX_DISK_MB) {
      throw new InvalidSpecError(
        `diskSizeMb must be an integer in ${MIN_DISK_MB}..${MAX_DISK_MB}, got ${spec.diskSizeMb}`,
      );
    }
    const lower = this.layout.templateRootfs(path.resolve(spec.templateDir));
    const st = await fs.stat(lower).catch(() => null);
    if (!st?.isDirectory()) throw new InvalidSpecError(`template has no root file system: ${lower} is not a directory`);
    if (!(await pathExists(path.join(this.layout.envdDir, 'envd.mjs')))) {
      throw new Error(`envd is not staged in ${this.layout.envdDir}: call stageEnvd() first`);
    }
    return lower;
  }

  create(spec: CapsuleSpec): Promise<CapsuleHandle> {
    return this.withLock(spec.id, () => this.createLocked(spec));
  }

  private async createLocked(spec: CapsuleSpec): Promise<CapsuleHandle> {
    const lower = await this.validate(spec);
    const { id } = spec;
    if (this.capsules.has(id)) throw new CapsuleExistsError(id);
    const files = this.layout.capsuleFiles(id);

    const timings: Record<string, number> = {};
    let t = performance.now();
    const step = (name: string) => {
      const now = performance.now();
      timings[name] = now - t;
      t = now;
    };
    // Shared, made once: host rules, the formatted disk of this size, resolv.conf.
    await this.net.ensureHostSetup();
    await this.disks.image(spec.diskSizeMb);
    this.resolvConf ??= hostResolvConf();
    this.swap ??= swapAccounting();
    this.nofile ??= capsuleNofile();
    const [resolv, swap, nofile] = await Promise.all([this.resolvConf, this.swap, this.nofile]);
    step('shared');

    const undo: { what: string; fn: () => Promise<void> }[] = [];
    try {
      const slot = this.net.slots.allocate();
      undo.push({ what: `release slot ${slot}`, fn: async () => this.net.slots.release(slot) });

      // The network and the disk are independent: make them at the same time. The
      // network's undo is registered first and tolerates a half-made network.
      undo.push({ what: `remove network slot ${slot}`, fn: () => this.net.remove(slot) });
      const netMade = this.net.create(slot);
      netMade.catch(() => {}); // awaited below, also when the disk fails
      try {
        await fs.mkdir(this.layout.sandboxesDir, { recursive: true });
        try {
          await fs.mkdir(files.dir, { mode: 0o700 });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new CapsuleExistsError(id);
          throw err;
        }
        undo.push({ what: `remove ${files.dir}`, fn: () => removeTree(files.dir) });
        await this.disks.claim(spec.diskSizeMb, files.diskImage);
        await fs.mkdir(files.disk);
        step('disk_copy');

        await mountImage(files.diskImage, files.disk);
        undo.push({ what: 'unmount the disk', fn: () => this.unmountDisk(id) });
        step('disk_mount');

        await fs.mkdir(files.rootfs);
        await mountOverlay(lower, files.upper, files.work, files.rootfs);
        undo.push({ what: 'unmount the root overlay', fn: () => unmountIfMounted(files.rootfs) });
        step('overlay_mount');
      } catch (err) {
        await netMade.catch(() => {});
        throw err;
      }
      const net = await netMade;
      step('network_wait');

      const config = ociConfig({
        id,
        rootfs: files.rootfs,
        netnsPath: net.netnsPath,
        envdDir: this.layout.envdDir,
        hostsFile: files.hosts,
        resolvFile: files.resolvConf,
        hostnameFile: files.hostname,
        cgroupsPath: this.cgroupsPath(id),
        vcpus: spec.vcpus,
        memoryMb: spec.memoryMb,
        pidsLimit: this.pidsLimit,
        swapAccounting: swap,
        nofile,
      });
      await Promise.all([
        fs.writeFile(files.hosts, capsuleHosts(net.capsuleIp)),
        fs.writeFile(files.resolvConf, resolv),
        fs.writeFile(files.hostname, capsuleHostname()),
        fs.writeFile(files.config, JSON.stringify(config)),
      ]);
      step('bundle');

      undo.push({ what: 'delete the runc container', fn: () => this.removeContainer(id) });
      const pid = await this.startContainer(id, files);
      step('runc_run');

      const handle: CapsuleHandle = { id, hostIp: net.capsuleIp, pid };
      const saved: SavedState = {
        version: STATE_VERSION,
        spec: { ...spec, templateDir: path.resolve(spec.templateDir) },
        handle,
        slot,
        createdAt: new Date().toISOString(),
      };
      await writeAtomic(files.state, JSON.stringify(saved, null, 2));
      step('state');
      this.capsules.set(id, { spec: saved.spec, handle, net, state: 'running' });
      this.lastCreateTimings = timings;
      return handle;
    } catch (err) {
      const failures: Error[] = [];
      for (const u of undo.reverse()) {
        try {
          await u.fn();
        } catch (undoErr) {
          failures.push(new Error(`${u.what}: ${message(undoErr)}`));
        }
      }
      if (failures.length) {
        this.log.error({ id, err: message(err), failures: failures.map(message) }, 'capsule create rollback failed');
        throw new AggregateError(
          [err, ...failures],
          `creating capsule ${id} failed (${message(err)}) and rollback failed`,
        );
      }
      throw err;
    }
  }

  /** `runc run --detach`; init's stdout/stderr go to a log on the capsule's own disk (bounded by its size). */
  private async startContainer(id: string, files: ReturnType<Layout['capsuleFiles']>): Promise<number> {
    const pidFile = path.join(files.dir, 'init.pid');
    const log = await fs.open(files.log, 'a', 0o600);
    try {
      await this.runc(['run', '--detach', '--bundle', files.dir, '--pid-file', pidFile, id], { outputFd: log.fd });
    } catch (err) {
      const tail = (await fs.readFile(files.log, 'utf8').catch(() => '')).trim().split('\n').slice(-5).join('\n');
      throw new Error(`runc could not start capsule ${id}: ${tail || message(err)}`);
    } finally {
      await log.close();
    }
    const pid = Number((await fs.readFile(pidFile, 'utf8')).trim());
    if (!Number.isInteger(pid) || pid <= 0) throw new Error(`runc wrote no init pid for ${id}`);
    return pid;
  }

  /** Kills and deletes the runc container (if any) and removes its cgroups in every hierarchy. */
  private async removeContainer(id: string): Promise<void> {
    const r = await runStatus(this.runcBin, ['--root', this.layout.runcRoot, 'delete', '--force', id]);
    if (r.code !== 0 && !/does not exist|not exist/i.test(r.stderr)) {
      throw new Error(`runc delete ${id}: ${r.stderr.trim()}`);
    }
    const errors: unknown[] = [];
    for (const h of await hierarchies()) {
      const dir = path.join(h, cgroupParent(this.prefix), id);
      if (await pathExists(dir)) await removeCgroup(dir).catch((e: unknown) => errors.push(e));
    }
    if (errors.length) throw new AggregateError(errors, `removing the cgroups of ${id} failed`);
  }

  /** Unmounts the capsule's disk and detaches any loop device still backed by its image. */
  private async unmountDisk(id: string): Promise<void> {
    const files = this.layout.capsuleFiles(id);
    await unmountIfMounted(files.disk);
    for (const dev of await loopDevicesOf(files.diskImage)) await detachLoop(dev);
  }

  private get(id: string): Capsule {
    const c = this.capsules.get(id);
    if (!c) throw new CapsuleNotFoundError(id);
    return c;
  }

  pause(id: string): Promise<void> {
    return this.withLock(id, async () => {
      const c = this.get(id);
      if (c.state === 'paused') return;
      await this.runc(['pause', id]);
      c.state = 'paused';
    });
  }

  resume(id: string): Promise<void> {
    return this.withLock(id, async () => {
      const c = this.get(id);
      if (c.state === 'running') return;
      await this.runc(['resume', id]);
      c.state = 'running';
    });
  }

  destroy(id: string): Promise<void> {
    return this.withLock(id, async () => {
      const c = this.get(id);
      const errors = await this.teardown(id, c.net.slot);
      if (errors.length) {
        // Kept, so a retry runs the (idempotent) steps again.
        throw new AggregateError(errors, `destroying capsule ${id} failed: ${errors.map(message).join('; ')}`);
      }
      this.capsules.delete(id);
      this.net.slots.release(c.net.slot);
    });
  }

  /** Every removal step for one capsule, each attempted whatever the others did; returns what failed. */
  private async teardown(id: string, slot: number | null): Promise<Error[]> {
    const files = this.layout.capsuleFiles(id);
    const errors: Error[] = [];
    const attempt = async (what: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (err) {
        errors.push(new Error(`${what}: ${message(err)}`));
      }
    };
    await attempt('delete container', () => this.removeContainer(id));
    await attempt('unmount root overlay', () => unmountIfMounted(files.rootfs));
    await attempt('unmount disk', () => this.unmountDisk(id));
    if (slot !== null) await attempt('remove network', () => this.net.remove(slot));
    await attempt('remove sandbox directory', () => removeTree(files.dir));
    return errors;
  }

  stats(id: string): Promise<CapsuleStats> {
    const c = this.get(id);
    return Promise.all([
      readStats(this.prefix, c.spec.id),
      allocatedBytes(this.layout.capsuleFiles(id).diskImage),
    ]).then(([cg, diskBytes]) => ({ ...cg, diskBytes }));
  }

  exportRootfs(id: string, destRootfs: string): Promise<{ sizeBytes: number }> {
    return this.withLock(id, async () => {
      const c = this.get(id);
      const files = this.layout.capsuleFiles(id);
      const existing = await fs.readdir(destRootfs).catch(() => null);
      if (existing && existing.length) throw new Error(`export destination ${destRootfs} is not empty`);
      await fs.mkdir(destRootfs, { recursive: true, mode: 0o755 });
      // Frozen while copying, so the copy is one consistent moment of the file system.
      const wasRunning = c.state === 'running';
      if (wasRunning) await this.runc(['pause', id]);
      try {
        // The merged overlay view: upper over lower, whiteouts already applied.
        await run('cp', ['-a', '--sparse=always', '--one-file-system', `${files.rootfs}/.`, `${destRootfs}/`]);
      } catch (err) {
        await removeTree(destRootfs).catch(() => {});
        throw err;
      } finally {
        if (wasRunning) await this.runc(['resume', id]);
      }
      const du = await run('du', ['-s', '--block-size=1', destRootfs]);
      return { sizeBytes: Number(du.split(/\s/)[0]) };
    });
  }

  async recover(): Promise<RecoveredCapsule[]> {
    await this.net.ensureHostSetup();
    await this.disks.sweepSpares();
    const containers = await this.runcList();
    const adopted: RecoveredCapsule[] = [];
    const dirs = await fs.readdir(this.layout.sandboxesDir).catch(() => [] as string[]);
    for (const name of dirs) {
      if (!isSafeName(name) || this.capsules.has(name)) continue;
      const saved = await readState(this.layout.capsuleFiles(name).state);
      const rc = containers.get(name);
      if (!saved || saved.spec.id !== name || !rc || (rc.status !== 'running' && rc.status !== 'paused')) continue;
      const files = this.layout.capsuleFiles(name);
      let net: CapsuleNetwork;
      try {
        net = this.net.describe(saved.slot);
      } catch {
        continue; // slot outside today's subnet: cannot be reached, removed below
      }
      const mounted = new Set((await readMounts()).map((m) => m.mountPoint));
      if (
        net.capsuleIp !== saved.handle.hostIp ||
        !mounted.has(files.rootfs) ||
        !mounted.has(files.disk) ||
        !(await this.net.isPresent(saved.slot)) ||
        !this.net.slots.reserve(saved.slot)
      ) {
        continue;
      }
      const state: RuntimeState = rc.status === 'paused' ? 'paused' : 'running';
      const handle = { ...saved.handle, pid: rc.pid };
      this.capsules.set(name, { spec: saved.spec, handle, net, state });
      adopted.push({ spec: saved.spec, handle, state });
    }
    const errors = await this.removeUnowned(containers);
    for (const err of errors) this.log.error({ err: message(err) }, 'recover: could not remove a leftover');
    this.log.info({ adopted: adopted.map((a) => a.spec.id), leftovers_failed: errors.length }, 'runtime recovered');
    return adopted;
  }

  private async runcList(): Promise<Map<string, { pid: number; status: string }>> {
    const out = await this.runc(['list', '--format', 'json']);
    const list = (JSON.parse(out.trim() || 'null') ?? []) as { id: string; pid: number; status: string }[];
    return new Map(list.map((c) => [c.id, { pid: c.pid, status: c.status }]));
  }

  /** Removes every trace of this agent no live capsule owns; returns what could not be removed. */
  private async removeUnowned(containers: Map<string, unknown>): Promise<Error[]> {
    const errors: Error[] = [];
    const attempt = async (what: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (err) {
        errors.push(new Error(`${what}: ${message(err)}`));
      }
    };
    const owned = (id: string) => this.capsules.has(id);
    for (const id of containers.keys()) {
      if (!owned(id)) await attempt(`runc container ${id}`, () => this.removeContainer(id));
    }
    for (const { dir, id } of await listCapsuleCgroups(this.prefix)) {
      if (!owned(id)) await attempt(`cgroup ${dir}`, () => removeCgroup(dir));
    }
    const sandboxes = this.layout.sandboxesDir;
    const liveDirs = new Set([...this.capsules.keys()].map((id) => this.layout.capsuleFiles(id).dir));
    const isLive = (p: string) => [...liveDirs].some((d) => p === d || p.startsWith(d + '/'));
    for (const point of await mountsUnder(sandboxes)) {
      if (!isLive(point)) await attempt(`mount ${point}`, () => unmount(point));
    }
    for (const { device, backing } of await allLoopDevices()) {
      if (backing.startsWith(sandboxes + '/') && !isLive(backing)) {
        await attempt(`loop device ${device}`, () => detachLoop(device));
      }
    }
    const liveSlots = new Set([...this.capsules.values()].map((c) => c.net.slot));
    for (const slot of await this.net.listHostSlots()) {
      if (!liveSlots.has(slot)) await attempt(`network slot ${slot}`, () => this.net.remove(slot));
    }
    for (const name of await fs.readdir(sandboxes).catch(() => [] as string[])) {
      const dir = path.join(sandboxes, name);
      if (!liveDirs.has(dir)) await attempt(`directory ${dir}`, () => removeTree(dir));
    }
    return errors;
  }

  /** Removes this agent's iptables chains and parent cgroups (retiring an agent, a test's end); capsules should be gone. */
  async removeHostSetup(): Promise<void> {
    await this.disks.close();
    await this.net.removeHostSetup();
    await removeParents(this.prefix);
  }

  /** Path of one of a capsule's cgroup directories (for inspection). */
  cgroupDir(controller: string, id: string): string {
    return cgroupDir(controller, this.prefix, id);
  }
}

async function unmountIfMounted(point: string): Promise<void> {
  if ((await mountsUnder(point)).includes(point)) await unmount(point);
}

async function readState(file: string): Promise<SavedState | null> {
  try {
    const s = JSON.parse(await fs.readFile(file, 'utf8')) as SavedState;
    return s.version === STATE_VERSION && s.spec && s.handle && Number.isInteger(s.slot) ? s : null;
  } catch {
    return null;
  }
}
