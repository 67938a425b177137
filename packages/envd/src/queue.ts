// A small async queue between an event source and one streaming response.
export type Next<T> = { value: T } | 'timeout' | 'closed';

export class AsyncQueue<T> {
  private items: T[] = [];
  private wake: (() => void) | undefined;
  private closedWith: { error?: Error } | undefined;

  get length(): number {
    return this.items.length;
  }

  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  push(item: T): void {
    if (this.closedWith) return;
    this.items.push(item);
    this.notify();
  }

  /** Drops the oldest item (used by bounded queues). */
  shift(): T | undefined {
    return this.items.shift();
  }

  /** Ends the queue: after the buffered items, next() reports 'closed' (or throws `error`). */
  close(error?: Error): void {
    if (this.closedWith) return;
    this.closedWith = { error };
    this.notify();
  }

  /** Ends the queue at once, discarding buffered items. */
  abort(error: Error): void {
    this.items = [];
    this.closedWith = undefined;
    this.close(error);
  }

  drain(): T[] {
    const all = this.items;
    this.items = [];
    return all;
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** The next item, 'timeout' after `timeoutMs` idle, or 'closed'. Rejects if aborted via `signal` or closed with an error. */
  async next(timeoutMs: number, signal?: AbortSignal): Promise<Next<T>> {
    for (;;) {
      if (this.items.length > 0) return { value: this.items.shift() as T };
      if (this.closedWith) {
        if (this.closedWith.error) throw this.closedWith.error;
        return 'closed';
      }
      signal?.throwIfAborted();
      let timer: NodeJS.Timeout | undefined;
      let timedOut = false;
      let onAbort: (() => void) | undefined;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
          timer = setTimeout(() => {
            timedOut = true;
            resolve();
          }, timeoutMs);
        }
        if (signal) {
          onAbort = () => resolve();
          signal.addEventListener('abort', onAbort, { once: true });
        }
      });
      if (timer) clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
      if (this.wake) this.wake = undefined;
      if (timedOut && this.items.length === 0 && !this.closedWith) return 'timeout';
    }
  }
}
