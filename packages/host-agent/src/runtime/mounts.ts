// Mount table helpers: find what is mounted under a directory and take it
// down safely before a directory tree is removed.
import fs from 'node:fs/promises';
import path from 'node:path';
import { run, runStatus } from './exec.js';

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export interface MountEntry {
  mountPoint: string;
  fsType: string;
  source: string;
}

/** The agent's mount table, in mount order. */
export async function readMounts(): Promise<MountEntry[]> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    // id parent major:minor root mountpoint opts [optional...] - fstype source superopts
    const [left, right] = line.split(' - ');
    const fields = left!.split(' ');
    const rightFields = (right ?? '').split(' ');
    entries.push({
      mountPoint: unescapeMountPath(fields[4]!),
      fsType: rightFields[0] ?? '',
      source: unescapeMountPath(rightFields[1] ?? ''),
    });
  }
  return entries;
}

/** Mount points at or below dir, deepest (most recently mounted) first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const base = path.resolve(dir);
  const points = (await readMounts()).map((m) => m.mountPoint).filter((p) => p === base || p.startsWith(base + '/'));
  return [...new Set(points.reverse())];
}

/** Unmounts one mount point; falls back to a lazy unmount when it is busy. */
export async function unmount(point: string): Promise<void> {
  const r = await runStatus('umount', [point]);
  if (r.code === 0) return;
  if (/not mounted|no mount point/i.test(r.stderr)) return;
  await run('umount', ['-l', point]);
}

/** Unmounts everything at or below dir (repeatedly, for stacked mounts). */
export async function unmountAllUnder(dir: string): Promise<void> {
  for (let round = 0; round < 8; round++) {
    const points = await mountsUnder(dir);
    if (points.length === 0) return;
    for (const p of points) await unmount(p);
  }
  const left = await mountsUnder(dir);
  if (left.length) throw new Error(`still mounted after unmounting: ${left.join(', ')}`);
}

/**
 * Removes a directory tree that may have had things mounted in it. Unmounts
 * first, and never crosses into another file system, so a mount that could
 * not be taken down cannot make this delete host files.
 */
export async function removeTree(dir: string): Promise<void> {
  try {
    await fs.lstat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  await unmountAllUnder(dir);
  await run('rm', ['-rf', '--one-file-system', '--', dir]);
}
