// Stages what every capsule runs from /opt/wrenn (bind-mounted read-only):
// the host's node binary, a static tini as PID 1, the envd bundle, and the
// native node-pty package envd loads. Files are replaced atomically and only
// when their source changed, so staging at every agent start is cheap and
// running capsules keep the files they started with.
import { createRequire } from 'node:module';
import fs from 'node:fs/promises';
import path from 'node:path';
import { REPO_ROOT } from '../layout.js';

export const TINI_STATIC = '/usr/bin/tini-static';
export const DEFAULT_ENVD_BUNDLE = path.join(REPO_ROOT, 'packages', 'envd', 'bundle', 'envd.mjs');

/** The installed node-pty package directory, resolved the way envd resolves it. */
export function nodePtyDir(): string {
  const req = createRequire(path.join(REPO_ROOT, 'packages', 'envd', 'package.json'));
  return path.dirname(req.resolve('node-pty/package.json'));
}

interface CopyItem {
  from: string;
  to: string;
  mode: number;
}

async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listTree(full)));
    else if (e.isFile()) out.push(full);
  }
  return out;
}

/** Copies when size or mtime differ; via a temporary name, so a reader never sees half a file. */
async function copyIfChanged(item: CopyItem): Promise<boolean> {
  const src = await fs.stat(item.from);
  const dst = await fs.stat(item.to).catch(() => null);
  if (dst && dst.size === src.size && Math.abs(dst.mtimeMs - src.mtimeMs) < 1 && (dst.mode & 0o777) === item.mode)
    return false;
  await fs.mkdir(path.dirname(item.to), { recursive: true, mode: 0o755 });
  const tmp = `${item.to}.tmp-${process.pid}`;
  try {
    await fs.copyFile(item.from, tmp);
    await fs.chmod(tmp, item.mode);
    await fs.utimes(tmp, src.atime, src.mtime);
    await fs.rename(tmp, item.to);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  return true;
}

export interface StageOptions {
  envdDir: string;
  envdBundle: string;
  nodeBinary?: string;
  tini?: string;
  nodePty?: string;
}

/** Fills envdDir; returns how many files were (re)copied. */
export async function stageEnvd(opts: StageOptions): Promise<number> {
  try {
    await fs.access(opts.envdBundle);
  } catch {
    throw new Error(`envd bundle not found at ${opts.envdBundle}: build it with \`npm run build\``);
  }
  const tini = opts.tini ?? TINI_STATIC;
  try {
    await fs.access(tini);
  } catch {
    throw new Error(`${tini} not found: install the Debian package tini (scripts/setup.sh does)`);
  }
  const pty = opts.nodePty ?? nodePtyDir();
  const items: CopyItem[] = [
    { from: opts.nodeBinary ?? process.execPath, to: path.join(opts.envdDir, 'node'), mode: 0o755 },
    { from: tini, to: path.join(opts.envdDir, 'tini'), mode: 0o755 },
    { from: opts.envdBundle, to: path.join(opts.envdDir, 'envd.mjs'), mode: 0o644 },
  ];
  const ptyDest = path.join(opts.envdDir, 'node_modules', 'node-pty');
  items.push({ from: path.join(pty, 'package.json'), to: path.join(ptyDest, 'package.json'), mode: 0o644 });
  for (const f of await listTree(path.join(pty, 'lib'))) {
    if (f.endsWith('.js')) items.push({ from: f, to: path.join(ptyDest, path.relative(pty, f)), mode: 0o644 });
  }
  const native = path.join(pty, 'build', 'Release', 'pty.node');
  try {
    await fs.access(native);
  } catch {
    throw new Error(`node-pty's native module is missing at ${native}: reinstall node-pty`);
  }
  items.push({ from: native, to: path.join(ptyDest, 'build', 'Release', 'pty.node'), mode: 0o755 });

  await fs.mkdir(opts.envdDir, { recursive: true, mode: 0o755 });
  let copied = 0;
  for (const item of items) if (await copyIfChanged(item)) copied++;
  return copied;
}
