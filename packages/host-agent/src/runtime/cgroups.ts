// cgroup v1 access for capsules (this host's hybrid layout: one hierarchy per
// controller under /sys/fs/cgroup, plus name=systemd and the unified tree).
// runc creates and removes a capsule's cgroups; this module reads them for
// stats and finds leftovers of capsules that are gone.
import fs from 'node:fs/promises';
import path from 'node:path';

export const CGROUP_ROOT = '/sys/fs/cgroup';

/** The parent cgroup (relative) under which one agent's capsules live. */
export function cgroupParent(prefix: string): string {
  return `wrenn-${prefix}`;
}

/** Every mounted hierarchy directory (cpu, memory, pids, freezer, systemd, unified, ...); symlinks skipped. */
export async function hierarchies(): Promise<string[]> {
  const entries = await fs.readdir(CGROUP_ROOT, { withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isDirectory()).map((e) => path.join(CGROUP_ROOT, e.name));
}

/** Path of a capsule's cgroup in one controller hierarchy. */
export function cgroupDir(controller: string, prefix: string, id: string): string {
  return path.join(CGROUP_ROOT, controller, cgroupParent(prefix), id);
}

export async function swapAccounting(): Promise<boolean> {
  try {
    await fs.access(path.join(CGROUP_ROOT, 'memory', 'memory.memsw.limit_in_bytes'));
    return true;
  } catch {
    return false;
  }
}

/** Names of the capsule cgroups under this agent's parent, per hierarchy directory. */
export async function listCapsuleCgroups(prefix: string): Promise<{ dir: string; id: string }[]> {
  const found: { dir: string; id: string }[] = [];
  for (const h of await hierarchies()) {
    const parent = path.join(h, cgroupParent(prefix));
    const entries = await fs.readdir(parent, { withFileTypes: true }).catch(() => []);
    for (const e of entries) if (e.isDirectory()) found.push({ dir: path.join(parent, e.name), id: e.name });
  }
  return found;
}

/** Removes this agent's (empty) parent cgroups; one that still holds capsules is left alone. */
export async function removeParents(prefix: string): Promise<void> {
  for (const h of await hierarchies()) {
    await fs.rmdir(path.join(h, cgroupParent(prefix))).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT' && err.code !== 'EBUSY' && err.code !== 'ENOTEMPTY') throw err;
    });
  }
}

async function readPids(dir: string): Promise<number[]> {
  const text = await fs.readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map(Number);
}

/**
 * Removes one capsule cgroup directory. Processes still in it (a capsule whose
 * runc state was lost) are killed first; the freezer is thawed so they can die.
 */
export async function removeCgroup(dir: string): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      await fs.rmdir(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') throw err;
    }
    const pids = await readPids(dir);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await fs.writeFile(path.join(dir, 'freezer.state'), 'THAWED').catch(() => {});
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`cgroup ${dir} stays busy: processes ${(await readPids(dir)).join(', ')} do not exit`);
}

export interface CgroupStats {
  cpuNs: number;
  memoryBytes: number;
}

function statField(text: string, key: string): number {
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/**
 * CPU time from cpuacct.usage; memory as the working set (usage minus the
 * inactive file cache the kernel can drop at no cost), which is what an
 * RSS-style figure means for a group of processes and what the memory limit
 * actually presses on.
 */
export async function readStats(prefix: string, id: string): Promise<CgroupStats> {
  const cpu = await fs.readFile(path.join(cgroupDir('cpuacct', prefix, id), 'cpuacct.usage'), 'utf8');
  const memDir = cgroupDir('memory', prefix, id);
  const usage = Number(await fs.readFile(path.join(memDir, 'memory.usage_in_bytes'), 'utf8'));
  const stat = await fs.readFile(path.join(memDir, 'memory.stat'), 'utf8');
  const inactiveFile = statField(stat, 'total_inactive_file');
  return { cpuNs: Number(cpu), memoryBytes: Math.max(0, usage - inactiveFile) };
}
