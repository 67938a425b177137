// A background job run every interval, never overlapping itself; stop() waits
// for a run in progress. Used by the host monitor and the stats sampler.
import type { Logger } from 'pino';

export class PeriodicTask {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly name: string,
    private readonly intervalMs: number,
    private readonly run: () => Promise<void>,
    private readonly log: Logger,
  ) {}

  /** Runs at once, then `intervalMs` after each run ends. */
  start(): void {
    if (this.timer) return;
    const tick = () => {
      this.running = this.run()
        .catch((err: unknown) => this.log.error({ err }, `${this.name} failed`))
        .finally(() => {
          this.running = null;
          if (this.timer) this.timer = setTimeout(tick, this.intervalMs);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
  }
}
