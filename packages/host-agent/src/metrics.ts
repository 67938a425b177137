// Live capsule metrics: one timer samples every running capsule every 500 ms
// through Runtime.stats into three tiered ring buffers per capsule:
//   raw     500 ms samples, 1200 points = 10 min
//   30 s    averages of 60 raw samples, 240 points = 2 h
//   5 min   averages of 10 30-s points, 288 points = 24 h
// An averaged point carries the timestamp of the last sample it covers.
import type { CapsuleStats } from './runtime/types.js';

export interface MetricSample {
  /** Unix milliseconds. */
  ts: number;
  cpuPct: number;
  memBytes: number;
  diskBytes: number;
}

export const SAMPLE_INTERVAL_MS = 500;
export const RAW_CAPACITY = 1200;
export const MID_CAPACITY = 240;
export const LONG_CAPACITY = 288;
/** Raw samples per 30 s point, and 30 s points per 5 min point. */
export const RAW_PER_MID = 60;
export const MID_PER_LONG = 10;

export const METRIC_RANGES = ['5m', '10m', '1h', '2h', '6h', '12h', '24h'] as const;
export type MetricRange = (typeof METRIC_RANGES)[number];

const RANGE_SPEC: Record<MetricRange, { tier: 'raw' | 'mid' | 'long'; ms: number }> = {
  '5m': { tier: 'raw', ms: 5 * 60_000 },
  '10m': { tier: 'raw', ms: 10 * 60_000 },
  '1h': { tier: 'mid', ms: 60 * 60_000 },
  '2h': { tier: 'mid', ms: 2 * 60 * 60_000 },
  '6h': { tier: 'long', ms: 6 * 60 * 60_000 },
  '12h': { tier: 'long', ms: 12 * 60 * 60_000 },
  '24h': { tier: 'long', ms: 24 * 60 * 60_000 },
};

export function isMetricRange(value: string): value is MetricRange {
  return (METRIC_RANGES as readonly string[]).includes(value);
}

/** Fixed-capacity ring buffer; the oldest entry is overwritten when full. */
export class Ring<T> {
  private readonly buf: (T | undefined)[];
  private start = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    this.buf = new Array<T | undefined>(capacity);
  }
  get length(): number {
    return this.count;
  }
  push(value: T): void {
    const end = (this.start + this.count) % this.capacity;
    this.buf[end] = value;
    if (this.count < this.capacity) this.count++;
    else this.start = (this.start + 1) % this.capacity;
  }
  /** Oldest first. */
  toArray(): T[] {
    const out: T[] = [];
    for (let i = 0; i < this.count; i++) out.push(this.buf[(this.start + i) % this.capacity] as T);
    return out;
  }
  clear(): void {
    this.buf.fill(undefined);
    this.start = 0;
    this.count = 0;
  }
}

class Averager {
  n = 0;
  private cpu = 0;
  private mem = 0;
  private disk = 0;
  private lastTs = 0;
  add(p: MetricSample): void {
    this.n++;
    this.cpu += p.cpuPct;
    this.mem += p.memBytes;
    this.disk += p.diskBytes;
    this.lastTs = p.ts;
  }
  take(): MetricSample {
    const p = {
      ts: this.lastTs,
      cpuPct: this.cpu / this.n,
      memBytes: Math.round(this.mem / this.n),
      diskBytes: Math.round(this.disk / this.n),
    };
    this.reset();
    return p;
  }
  reset(): void {
    this.n = this.cpu = this.mem = this.disk = this.lastTs = 0;
  }
}

/** The three tiers of one capsule. */
export class CapsuleMetrics {
  readonly raw = new Ring<MetricSample>(RAW_CAPACITY);
  readonly mid = new Ring<MetricSample>(MID_CAPACITY);
  readonly long = new Ring<MetricSample>(LONG_CAPACITY);
  private readonly midAcc = new Averager();
  private readonly longAcc = new Averager();

  add(sample: MetricSample): void {
    this.raw.push(sample);
    this.midAcc.add(sample);
    if (this.midAcc.n < RAW_PER_MID) return;
    const mid = this.midAcc.take();
    this.mid.push(mid);
    this.longAcc.add(mid);
    if (this.longAcc.n >= MID_PER_LONG) this.long.push(this.longAcc.take());
  }

  /** Points of the tier serving `range`, newer than now - range. */
  query(range: MetricRange, now: number): MetricSample[] {
    const spec = RANGE_SPEC[range];
    const cutoff = now - spec.ms;
    return this[spec.tier].toArray().filter((p) => p.ts >= cutoff);
  }

  /** Returns every tier and clears them (and the partial averages). */
  flush(): { raw: MetricSample[]; mid: MetricSample[]; long: MetricSample[] } {
    const out = { raw: this.raw.toArray(), mid: this.mid.toArray(), long: this.long.toArray() };
    this.raw.clear();
    this.mid.clear();
    this.long.clear();
    this.midAcc.reset();
    this.longAcc.reset();
    return out;
  }
}

/** CPU % over an interval for `vcpus` CPUs, clamped to 0..100. */
export function cpuPercent(deltaCpuNs: number, deltaWallMs: number, vcpus: number): number {
  if (deltaWallMs <= 0 || vcpus <= 0) return 0;
  const pct = (deltaCpuNs / (deltaWallMs * 1e6 * vcpus)) * 100;
  if (!Number.isFinite(pct)) return 0;
  return Math.min(100, Math.max(0, pct));
}

interface Tracked {
  vcpus: number;
  /** Previous reading, to turn cumulative CPU time into a rate. */
  prev: { cpuNs: number; wallMs: number } | null;
}

export interface SamplerOptions {
  stats: (id: string) => Promise<CapsuleStats>;
  intervalMs?: number;
  now?: () => number;
  onError?: (id: string, err: unknown) => void;
}

/**
 * Samples every tracked (running) capsule on one shared timer. Paused
 * capsules are untracked: their stored points stay, no new ones are taken.
 */
export class MetricsSampler {
  private readonly stores = new Map<string, CapsuleMetrics>();
  private readonly tracked = new Map<string, Tracked>();
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  private readonly now: () => number;

  constructor(private readonly opts: SamplerOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Starts (or restarts after a pause) sampling a capsule. */
  track(id: string, vcpus: number): void {
    if (!this.stores.has(id)) this.stores.set(id, new CapsuleMetrics());
    this.tracked.set(id, { vcpus, prev: null });
  }
  /** Stops sampling; the points are kept. */
  untrack(id: string): void {
    this.tracked.delete(id);
  }
  /** Forgets the capsule and its points. */
  remove(id: string): void {
    this.tracked.delete(id);
    this.stores.delete(id);
  }
  store(id: string): CapsuleMetrics | undefined {
    return this.stores.get(id);
  }
  isTracked(id: string): boolean {
    return this.tracked.has(id);
  }

  /** One round over every tracked capsule (exported for tests and benchmarks). */
  async sampleOnce(): Promise<void> {
    await Promise.all(
      [...this.tracked].map(async ([id, t]) => {
        let stats: CapsuleStats;
        try {
          stats = await this.opts.stats(id);
        } catch (err) {
          this.opts.onError?.(id, err);
          return;
        }
        const wallMs = this.now();
        // Untracked (paused/destroyed) while the read was in flight: drop it.
        if (this.tracked.get(id) !== t) return;
        const prev = t.prev;
        t.prev = { cpuNs: stats.cpuNs, wallMs };
        if (!prev) return;
        this.stores.get(id)?.add({
          ts: wallMs,
          cpuPct: cpuPercent(stats.cpuNs - prev.cpuNs, wallMs - prev.wallMs, t.vcpus),
          memBytes: stats.memoryBytes,
          diskBytes: stats.diskBytes,
        });
      }),
    );
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      // A slow round is not stacked on top of another.
      if (this.ticking) return;
      this.ticking = true;
      this.sampleOnce().finally(() => {
        this.ticking = false;
      });
    }, this.opts.intervalMs ?? SAMPLE_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
