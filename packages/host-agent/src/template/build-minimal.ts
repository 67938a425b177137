// Builds the built-in `minimal` template: a Debian bookworm minbase root file
// system made by debootstrap from the mirror the machine's apt already uses.
//
//   node packages/host-agent/dist/src/template/build-minimal.js [--force]
//
// The result, Layout.minimalTemplateDir, holds `rootfs/` (the read-only lower
// layer of every capsule) and `template.json`. A build goes into a temporary
// directory beside it and is renamed into place only when complete, so a
// template directory is always whole. template.json carries a hash of the
// recipe: an unchanged recipe reuses the existing build, a changed one
// rebuilds it.
//
// default_user is `root`. The image also has a user `user` (uid 1000, home
// /home/user, passwordless sudo) as E2B does, but capsules run with
// no-new-privileges, under which sudo (a setuid program) cannot gain root; a
// capsule's default user of `user` could therefore never become root. Runs as
// `user` stay available by asking for that user explicitly.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { openSync, closeSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Layout, MINIMAL_TEMPLATE, defaultDataDir } from '../layout.js';
import { run, CommandError } from '../runtime/exec.js';
import { removeTree } from '../runtime/mounts.js';

export const SUITE = 'bookworm';
/** Kept lean: a shell, TLS-capable curl, python3, process and network tools, an editor. */
export const MINIMAL_PACKAGES = [
  'bash',
  'ca-certificates',
  'curl',
  'iproute2',
  'iputils-ping',
  'less',
  'nano',
  'netbase',
  'procps',
  'python3',
  'sudo',
];
export const DEFAULT_USER = 'root';
/** Bump when the steps after debootstrap change, so existing builds are rebuilt. */
const RECIPE_VERSION = 1;

export interface TemplateMeta {
  name: string;
  recipe_hash: string;
  built_at: string;
  debootstrap_args: string[];
  mirror: string;
  size_bytes: number;
  default_user: string;
  users: { name: string; uid: number; home: string; sudo: boolean }[];
}

export function debootstrapArgs(tmpRootfs: string, mirror: string): string[] {
  return ['--variant=minbase', `--include=${MINIMAL_PACKAGES.join(',')}`, SUITE, tmpRootfs, mirror];
}

/** Hash of everything that decides the template's content (not where it was downloaded from). */
export function recipeHash(): string {
  const recipe = { RECIPE_VERSION, SUITE, variant: 'minbase', packages: MINIMAL_PACKAGES, DEFAULT_USER };
  return createHash('sha256').update(JSON.stringify(recipe)).digest('hex').slice(0, 16);
}

/**
 * The Debian mirror from the machine's apt sources: the first `deb` source
 * serving the `bookworm` suite in deb822 `debian.sources`, else in the
 * one-line `sources.list`.
 */
export function parseAptMirror(debSources: string | null, sourcesList: string | null): string | null {
  if (debSources) {
    for (const stanza of debSources.split(/\n\s*\n/)) {
      const fields = new Map<string, string>();
      for (const line of stanza.split('\n')) {
        const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line.trim());
        if (m && !line.startsWith('#')) fields.set(m[1]!.toLowerCase(), m[2]!.trim());
      }
      if (fields.get('enabled')?.toLowerCase() === 'no') continue;
      const types = (fields.get('types') ?? '').split(/\s+/);
      const suites = (fields.get('suites') ?? '').split(/\s+/);
      const uri = (fields.get('uris') ?? '').split(/\s+/)[0];
      if (types.includes('deb') && suites.includes(SUITE) && uri) return uri;
    }
  }
  if (sourcesList) {
    for (const raw of sourcesList.split('\n')) {
      const line = raw.replace(/#.*/, '').trim();
      // deb [options] uri suite components...
      const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
      if (m && m[2] === SUITE) return m[1]!;
    }
  }
  return null;
}

async function readOrNull(file: string): Promise<string | null> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch {
    return null;
  }
}

export async function machineAptMirror(): Promise<string> {
  const mirror = parseAptMirror(
    await readOrNull('/etc/apt/sources.list.d/debian.sources'),
    await readOrNull('/etc/apt/sources.list'),
  );
  if (!mirror) {
    throw new Error(
      `no Debian ${SUITE} mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list; ` +
        `cannot build the minimal template`,
    );
  }
  return mirror;
}

/** Reads a template's metadata; null when absent or unreadable. */
export async function readTemplateMeta(layout: Layout, templateDir: string): Promise<TemplateMeta | null> {
  const text = await readOrNull(layout.templateMeta(templateDir));
  if (!text) return null;
  try {
    return JSON.parse(text) as TemplateMeta;
  } catch {
    return null;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes temporary and superseded build directories left by builders that died. */
async function removeStaleBuilds(imagesDir: string): Promise<void> {
  let names: string[];
  try {
    names = await fs.readdir(imagesDir);
  } catch {
    return;
  }
  for (const name of names) {
    const tmp = /^\.minimal\.tmp-(\d+)-[0-9a-f]+$/.exec(name);
    if ((tmp && !pidAlive(Number(tmp[1]))) || /^\.minimal\.old-[0-9a-f]+$/.test(name)) {
      await removeTree(path.join(imagesDir, name));
    }
  }
}

async function allocatedBytes(dir: string): Promise<number> {
  const out = await run('du', ['-s', '--block-size=1', dir]);
  return Number(out.split(/\s/)[0]);
}

/** Runs the host's node under the rootfs' own libraries, as it will run inside a capsule. */
async function checkNodeRuns(rootfs: string): Promise<void> {
  const probe = path.join(rootfs, 'tmp', 'wrenn-node-check');
  try {
    await fs.link(process.execPath, probe).catch(() => fs.copyFile(process.execPath, probe));
    await fs.chmod(probe, 0o755);
    await run('chroot', [rootfs, '/tmp/wrenn-node-check', '-e', 'process.stdout.write(process.version)']);
  } catch (err) {
    throw new Error(`the host's node (${process.execPath}) does not run inside the template: ${String(err)}`);
  } finally {
    await fs.rm(probe, { force: true });
  }
}

/** Everything after debootstrap: users, host defaults, mount point, cleanup. */
async function customise(rootfs: string): Promise<void> {
  const etc = path.join(rootfs, 'etc');
  await run('chroot', [rootfs, 'useradd', '--create-home', '--uid', '1000', '--shell', '/bin/bash', 'user']);
  await fs.writeFile(path.join(etc, 'sudoers.d', 'user'), 'user ALL=(ALL) NOPASSWD:ALL\n', { mode: 0o440 });
  await fs.writeFile(path.join(etc, 'hostname'), 'capsule\n');
  await fs.writeFile(
    path.join(etc, 'hosts'),
    '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tcapsule\n',
  );
  // debootstrap copied the build machine's resolver; capsules get their own at start.
  await fs.rm(path.join(etc, 'resolv.conf'), { force: true });
  await fs.writeFile(path.join(etc, 'resolv.conf'), '');
  await fs.mkdir(path.join(rootfs, 'opt', 'wrenn'), { recursive: true, mode: 0o755 });
  // Downloaded packages and indexes are dead weight in every capsule (`apt update` refetches).
  for (const dir of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
    const full = path.join(rootfs, dir);
    for (const name of await fs.readdir(full)) {
      if (name !== 'partial' && name !== 'lock') await fs.rm(path.join(full, name), { recursive: true, force: true });
    }
  }
  await fs.rm(path.join(rootfs, 'var/cache/apt/pkgcache.bin'), { force: true });
  await fs.rm(path.join(rootfs, 'var/cache/apt/srcpkgcache.bin'), { force: true });
}

export interface BuildResult {
  status: 'built' | 'reused';
  dir: string;
  meta: TemplateMeta;
}

export interface BuildOptions {
  layout: Layout;
  /** Defaults to the machine's apt mirror. */
  mirror?: string;
  /** Rebuild even when an up-to-date build exists. */
  force?: boolean;
  /** Progress lines (one when a build starts, one when it ends). */
  log?: (line: string) => void;
}

export async function buildMinimalTemplate(opts: BuildOptions): Promise<BuildResult> {
  const { layout } = opts;
  const log = opts.log ?? (() => {});
  const dir = layout.minimalTemplateDir;
  const hash = recipeHash();
  await fs.mkdir(layout.imagesDir, { recursive: true });
  await removeStaleBuilds(layout.imagesDir);

  const existing = await readTemplateMeta(layout, dir);
  if (!opts.force && existing?.recipe_hash === hash) {
    const st = await fs.stat(layout.templateRootfs(dir)).catch(() => null);
    if (st?.isDirectory()) return { status: 'reused', dir, meta: existing };
  }

  if (process.getuid?.() !== 0) throw new Error('building the minimal template needs root (debootstrap, chroot)');
  const mirror = opts.mirror ?? (await machineAptMirror());
  const started = Date.now();
  const tmp = path.join(layout.imagesDir, `.${MINIMAL_TEMPLATE}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  const tmpRootfs = layout.templateRootfs(tmp);
  const args = debootstrapArgs(tmpRootfs, mirror);
  log(`building the minimal template: debootstrap ${SUITE} minbase from ${mirror} (about a minute)`);
  try {
    await fs.mkdir(tmp, { mode: 0o755 });
    const logFile = path.join(tmp, 'debootstrap.log');
    const fd = openSync(logFile, 'w');
    try {
      await run('debootstrap', args, { outputFd: fd, timeoutMs: 30 * 60_000 });
    } catch (err) {
      const tail = (await readOrNull(logFile))?.trim().split('\n').slice(-5).join('\n') ?? '';
      const why = err instanceof CommandError ? err.message : String(err);
      throw new Error(`debootstrap failed: ${why}\n${tail}`);
    } finally {
      closeSync(fd);
    }
    await fs.rm(logFile);
    await customise(tmpRootfs);
    await checkNodeRuns(tmpRootfs);
    const meta: TemplateMeta = {
      name: MINIMAL_TEMPLATE,
      recipe_hash: hash,
      built_at: new Date().toISOString(),
      debootstrap_args: args.map((a) => (a === tmpRootfs ? '<rootfs>' : a)),
      mirror,
      size_bytes: await allocatedBytes(tmpRootfs),
      default_user: DEFAULT_USER,
      users: [
        { name: 'root', uid: 0, home: '/root', sudo: false },
        { name: 'user', uid: 1000, home: '/home/user', sudo: true },
      ],
    };
    await fs.writeFile(layout.templateMeta(tmp), JSON.stringify(meta, null, 2) + '\n');

    // Swap into place: the old build (if any) is moved aside first, then removed.
    const old = path.join(layout.imagesDir, `.${MINIMAL_TEMPLATE}.old-${randomBytes(4).toString('hex')}`);
    const hadOld = await fs.rename(dir, old).then(
      () => true,
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return false;
        throw err;
      },
    );
    try {
      await fs.rename(tmp, dir);
    } catch (err) {
      if (hadOld) await fs.rename(old, dir);
      throw err;
    }
    if (hadOld) await removeTree(old);
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    log(`minimal template built in ${secs} s (${(meta.size_bytes / 2 ** 20).toFixed(0)} MiB) at ${dir}`);
    return { status: 'built', dir, meta };
  } catch (err) {
    await removeTree(tmp);
    throw err;
  }
}

async function main(): Promise<void> {
  const force = process.argv.includes('--force');
  const layout = new Layout(defaultDataDir());
  const log = (line: string) => process.stderr.write(`\x1b[1m[wrenn]\x1b[0m ${line}\n`);
  const result = await buildMinimalTemplate({ layout, force, log });
  if (result.status === 'reused') log(`minimal template up to date (${result.meta.recipe_hash})`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`[wrenn] error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
