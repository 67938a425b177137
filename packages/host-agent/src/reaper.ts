// TTL reaper: every 2 s, running capsules with timeoutSec > 0 that have been
// idle longer than that are paused; if pausing fails they are destroyed. It
// runs on its own timer, detached from any request, so a request ending (or
// the RPC server stopping) never leaves a pause half done.

export const REAPER_INTERVAL_MS = 2000;

export interface ReapCandidate {
  id: string;
  state: 'running' | 'paused';
  timeoutSec: number;
  /** Unix ms of the last operation on the capsule. */
  lastActiveAt: number;
  /** Operations in flight (open exec/PTY streams count): a busy capsule is not idle. */
  busy: number;
}

/** Ids of the capsules whose idle time exceeds their timeout at `now`. */
export function selectIdle(candidates: Iterable<ReapCandidate>, now: number): string[] {
  const out: string[] = [];
  for (const c of candidates) {
    if (c.state !== 'running' || c.timeoutSec <= 0 || c.busy > 0) continue;
    if (now - c.lastActiveAt > c.timeoutSec * 1000) out.push(c.id);
  }
  return out;
}

export interface ReaperHooks {
  candidates(): Iterable<ReapCandidate>;
  /** Pauses the capsule if it is still idle; resolves false when it no longer is (activity raced in). */
  pauseIfIdle(id: string): Promise<boolean>;
  destroy(id: string): Promise<void>;
  onAutoPaused(id: string): void;
  log: { warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
}

export class TtlReaper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly hooks: ReaperHooks,
    private readonly now: () => number = Date.now,
    private readonly intervalMs = REAPER_INTERVAL_MS,
  ) {}

  /** One pass; capsules are handled concurrently, each failure on its own. */
  async reapOnce(): Promise<void> {
    const ids = selectIdle(this.hooks.candidates(), this.now());
    await Promise.all(
      ids.map(async (id) => {
        try {
          if (await this.hooks.pauseIfIdle(id)) this.hooks.onAutoPaused(id);
        } catch (err) {
          this.hooks.log.warn({ id, err }, 'auto-pause failed; destroying the capsule');
          try {
            await this.hooks.destroy(id);
          } catch (err2) {
            this.hooks.log.error({ id, err: err2 }, 'destroy after failed auto-pause failed');
          }
        }
      }),
    );
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.reapOnce().finally(() => {
        this.running = null;
      });
    }, this.intervalMs);
    this.timer.unref();
  }

  /** Stops the timer; resolves when a pass in progress has finished. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
