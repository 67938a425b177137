// GET /metrics: resource use of the capsule, from inside it.
// CPU is the busy share of all CPUs between two /proc/stat samples (the
// previous call's, or 100 ms apart on the first call). Memory prefers the
// capsule's cgroup limit and usage (a container sees the host in /proc/meminfo).
import fs from 'node:fs';
import os from 'node:os';

export interface Metrics {
  ts: number;
  cpu_count: number;
  cpu_used_pct: number;
  mem_total: number;
  mem_used: number;
  mem_total_mib: number;
  mem_used_mib: number;
  disk_used: number;
  disk_total: number;
}

interface CpuSample {
  at: number;
  busy: number;
  total: number;
}

let last: CpuSample | undefined;
let lastPct = 0;

function cpuSample(): CpuSample {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const total = v.slice(0, 8).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
  return { at: Date.now(), busy: total - idle, total };
}

async function cpuUsedPct(): Promise<number> {
  let prev = last;
  if (!prev) {
    prev = cpuSample();
    await new Promise((resolve) => setTimeout(resolve, 100));
  } else if (Date.now() - prev.at < 100) {
    return lastPct;
  }
  const now = cpuSample();
  const dt = now.total - prev.total;
  lastPct = dt > 0 ? Math.min(100, Math.max(0, ((now.busy - prev.busy) / dt) * 100)) : 0;
  last = now;
  return Math.round(lastPct * 100) / 100;
}

function readNumber(path: string): number | undefined {
  try {
    const text = fs.readFileSync(path, 'utf8').trim();
    if (text === 'max') return undefined;
    const n = Number(text);
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

function memory(): { total: number; used: number } {
  const info = fs.readFileSync('/proc/meminfo', 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(info)?.[1] ?? 0) * 1024;
  let total = kb('MemTotal');
  let used = total - kb('MemAvailable');
  // cgroup v2, then v1: a limit below the machine's memory is the capsule's size.
  const limit = readNumber('/sys/fs/cgroup/memory.max') ?? readNumber('/sys/fs/cgroup/memory/memory.limit_in_bytes');
  const usage =
    readNumber('/sys/fs/cgroup/memory.current') ?? readNumber('/sys/fs/cgroup/memory/memory.usage_in_bytes');
  if (limit !== undefined && limit > 0 && limit < total && usage !== undefined) {
    total = limit;
    used = Math.min(usage, limit);
  }
  return { total, used: Math.max(0, used) };
}

/** CPUs the capsule may use: its cgroup CPU quota if one is set, else the CPUs it may run on. */
function cpuCount(): number {
  const cpus = os.availableParallelism();
  try {
    const [quota, period] = fs.readFileSync('/sys/fs/cgroup/cpu.max', 'utf8').trim().split(/\s+/);
    const q = Number(quota);
    const p = Number(period);
    if (Number.isFinite(q) && Number.isFinite(p) && q > 0 && p > 0)
      return Math.max(1, Math.min(cpus, Math.ceil(q / p)));
  } catch {
    // no cgroup v2 CPU controller visible: fall through
  }
  return cpus;
}

export async function collectMetrics(): Promise<Metrics> {
  const cpu = await cpuUsedPct();
  const mem = memory();
  const st = fs.statfsSync('/');
  const diskTotal = st.blocks * st.bsize;
  const MiB = 1024 * 1024;
  return {
    ts: Math.floor(Date.now() / 1000),
    cpu_count: cpuCount(),
    cpu_used_pct: cpu,
    mem_total: mem.total,
    mem_used: mem.used,
    mem_total_mib: Math.floor(mem.total / MiB),
    mem_used_mib: Math.floor(mem.used / MiB),
    disk_used: diskTotal - st.bfree * st.bsize,
    disk_total: diskTotal,
  };
}
