// The build queue: build ids waiting for a worker. With Redis it is the list
// `wrenn:build_queue` shared by every control plane (RPUSH / BLPOP, each
// worker on its own connection, since BLPOP blocks its connection); without
// Redis an in-process list with the same interface. The queue only says
// "look at this build": a worker claims a build with a compare-and-set on its
// row (pending → running), so a duplicate entry is harmless.
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

export const BUILD_QUEUE_KEY = 'wrenn:build_queue';
/** BLPOP waits this long per call, so a stopping worker notices within it. */
const POP_TIMEOUT_SEC = 1;

export interface BuildQueue {
  readonly kind: 'redis' | 'memory';
  push(buildId: string): Promise<void>;
  /** A consumer for one worker; pop() resolves null when the signal aborts (or nothing came in a while). */
  consumer(): BuildQueueConsumer;
  close(): Promise<void>;
}

export interface BuildQueueConsumer {
  pop(signal: AbortSignal): Promise<string | null>;
  /** Gives back an id popped just before stopping. */
  unpop(buildId: string): Promise<void>;
  close(): Promise<void>;
}

export class MemoryBuildQueue implements BuildQueue {
  readonly kind = 'memory' as const;
  private readonly items: string[] = [];
  private readonly waiters: ((id: string) => void)[] = [];

  push(buildId: string): Promise<void> {
    const w = this.waiters.shift();
    if (w) w(buildId);
    else this.items.push(buildId);
    return Promise.resolve();
  }

  consumer(): BuildQueueConsumer {
    return {
      pop: (signal) => {
        const next = this.items.shift();
        if (next !== undefined) return Promise.resolve(next);
        if (signal.aborted) return Promise.resolve(null);
        return new Promise((resolve) => {
          const waiter = (id: string) => {
            signal.removeEventListener('abort', onAbort);
            resolve(id);
          };
          const onAbort = () => {
            const i = this.waiters.indexOf(waiter);
            if (i >= 0) this.waiters.splice(i, 1);
            resolve(null);
          };
          signal.addEventListener('abort', onAbort, { once: true });
          this.waiters.push(waiter);
        });
      },
      unpop: (buildId) => {
        this.items.unshift(buildId);
        return Promise.resolve();
      },
      close: () => Promise.resolve(),
    };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

export class RedisBuildQueue implements BuildQueue {
  readonly kind = 'redis' as const;
  private readonly conns = new Set<Redis>();

  constructor(
    private readonly client: Redis,
    private readonly log: Logger,
  ) {}

  async push(buildId: string): Promise<void> {
    await this.client.rpush(BUILD_QUEUE_KEY, buildId);
  }

  consumer(): BuildQueueConsumer {
    // BLPOP blocks the connection it runs on: each worker has its own.
    const conn = this.client.duplicate({ maxRetriesPerRequest: null });
    conn.on('error', (err: Error) => this.log.warn({ err }, 'redis (build worker) connection error'));
    this.conns.add(conn);
    return {
      pop: async (signal) => {
        if (signal.aborted) return null;
        // Stopping does not wait for the BLPOP to time out: the connection is dropped.
        const onAbort = () => conn.disconnect();
        signal.addEventListener('abort', onAbort, { once: true });
        try {
          const r = await conn.blpop(BUILD_QUEUE_KEY, POP_TIMEOUT_SEC);
          return r ? r[1] : null;
        } catch (err) {
          if (signal.aborted) return null;
          this.log.warn({ err }, 'build queue: BLPOP failed; retrying');
          await new Promise((r) => setTimeout(r, 1000));
          return null;
        } finally {
          signal.removeEventListener('abort', onAbort);
        }
      },
      unpop: async (buildId) => {
        await this.client.lpush(BUILD_QUEUE_KEY, buildId);
      },
      close: async () => {
        this.conns.delete(conn);
        await conn.quit().catch(() => conn.disconnect());
      },
    };
  }

  async close(): Promise<void> {
    await Promise.all([...this.conns].map((c) => c.quit().catch(() => c.disconnect())));
  }
}
