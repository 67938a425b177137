// One process started by envd and the streams subscribed to it.
//
// Output fans out to every subscriber (Start's own stream, any number of
// Connect streams). There is no replay: a subscriber sees what happens after it
// joined. Flow control, per subscriber:
//   - each subscriber has its own queue;
//   - for piped processes, while some subscriber has more than HIGH_WATER
//     bytes queued, envd stops reading the process's output (the process then
//     blocks on write, as it would on a slow terminal), so a slow but working
//     client loses nothing;
//   - a subscriber that makes no progress for STALL_MS stops holding the
//     process back: it becomes "lagging" and misses output until it has
//     caught up (queue below LOW_WATER), so it neither blocks the others nor
//     grows memory (its queue never exceeds HIGH_WATER plus one chunk);
//   - PTY output is never paused (it is interactive): a subscriber over
//     HIGH_WATER lags at once.
// The end event is never dropped.
import type { ChildProcess } from 'node:child_process';
import os from 'node:os';
import { once } from 'node:events';
import { create } from '@bufbuild/protobuf';
import type { IPty } from 'node-pty';
import {
  ProcessEventSchema,
  type ProcessConfig,
  type ProcessEvent,
  type ProcessEvent_EndEvent,
} from '@wrenn/contracts/gen/process/process_pb';
import { AsyncQueue } from '../queue.js';
import { Code, EnvdError } from '../errors.js';

export const HIGH_WATER = 1 << 20;
export const LOW_WATER = 256 << 10;
export const STALL_MS = 5_000;
/** After the process exits, output still arriving is read until the pipes stay quiet this long. */
const EXIT_QUIET_MS = 100;

interface Item {
  event: ProcessEvent;
  size: number;
}

export class Subscriber {
  readonly queue = new AsyncQueue<Item>();
  bytes = 0;
  lagging = false;
  overSince: number | undefined;
  dropped = 0;

  constructor(private readonly proc: ManagedProcess) {}

  /** The next event, 'timeout' when idle for `idleMs`, or 'closed' after the end event. */
  async next(idleMs: number, signal: AbortSignal): Promise<ProcessEvent | 'timeout' | 'closed'> {
    const n = await this.queue.next(idleMs, signal);
    if (n === 'timeout' || n === 'closed') return n;
    this.bytes -= n.value.size;
    if (this.bytes <= LOW_WATER) {
      this.overSince = undefined;
      this.lagging = false;
      this.proc.updateFlow();
    }
    return n.value.event;
  }

  unsubscribe(): void {
    this.proc.unsubscribe(this);
  }
}

const signalWords: Record<string, string> = {
  SIGKILL: 'killed',
  SIGTERM: 'terminated',
  SIGINT: 'interrupt',
  SIGHUP: 'hangup',
  SIGQUIT: 'quit',
  SIGABRT: 'aborted',
  SIGSEGV: 'segmentation fault',
  SIGPIPE: 'broken pipe',
  SIGBUS: 'bus error',
  SIGFPE: 'floating point exception',
  SIGILL: 'illegal instruction',
  SIGUSR1: 'user defined signal 1',
  SIGUSR2: 'user defined signal 2',
  SIGALRM: 'alarm clock',
};

export type EndFields = Pick<ProcessEvent_EndEvent, 'exitCode' | 'exited' | 'status' | 'error'>;

function signalName(sig: number | string): string {
  if (typeof sig === 'string') return sig;
  return Object.entries(os.constants.signals).find(([, n]) => n === sig)?.[0] ?? `signal ${sig}`;
}

/** End event with the wording Go's os.ProcessState uses, which E2B clients show. */
export function endEvent(code: number | null, signal: number | string | null): EndFields {
  if (signal !== null && signal !== 0 && signal !== undefined) {
    const name = signalName(signal);
    const status = `signal: ${signalWords[name] ?? name}`;
    return { exitCode: -1, exited: false, status, error: status };
  }
  const c = code ?? 0;
  const status = `exit status ${c}`;
  return { exitCode: c, exited: true, status, error: c === 0 ? undefined : status };
}

export class ManagedProcess {
  readonly subscribers = new Set<Subscriber>();
  ended = false;
  private paused = false;
  private stallTimer: NodeJS.Timeout | undefined;
  private stdinOpen: boolean;
  private readonly endListeners: Array<() => void> = [];

  private constructor(
    readonly pid: number,
    readonly tag: string | undefined,
    readonly config: ProcessConfig,
    private readonly child: ChildProcess | undefined,
    private readonly pty: IPty | undefined,
  ) {
    this.stdinOpen = pty !== undefined || child?.stdin != null;
  }

  static piped(child: ChildProcess, tag: string | undefined, config: ProcessConfig): ManagedProcess {
    const p = new ManagedProcess(child.pid as number, tag, config, child, undefined);
    p.attachPipes(child);
    return p;
  }

  static terminal(pty: IPty, tag: string | undefined, config: ProcessConfig): ManagedProcess {
    const p = new ManagedProcess(pty.pid, tag, config, undefined, pty);
    pty.onData((data) => p.broadcastData('pty', data as unknown as Buffer));
    pty.onExit(({ exitCode, signal }) => p.finish(endEvent(exitCode, signal ?? null)));
    return p;
  }

  get isPty(): boolean {
    return this.pty !== undefined;
  }

  onEnd(fn: () => void): void {
    this.endListeners.push(fn);
  }

  private attachPipes(child: ChildProcess): void {
    let lastData = Date.now();
    child.stdout?.on('data', (chunk: Buffer) => {
      lastData = Date.now();
      this.broadcastData('stdout', chunk);
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      lastData = Date.now();
      this.broadcastData('stderr', chunk);
    });
    // Input written after the child closed its stdin fails with EPIPE: not envd's problem.
    child.stdin?.on('error', () => {
      this.stdinOpen = false;
    });
    // Errors after a successful spawn (a failed kill, a broken pipe) must not take envd down.
    child.on('error', () => {});
    child.stdout?.on('error', () => {});
    child.stderr?.on('error', () => {});
    child.once('exit', (code, signal) => {
      const end = endEvent(code, signal);
      const streams = [child.stdout, child.stderr].filter((s) => s !== null && !s.readableEnded && !s.destroyed);
      if (streams.length === 0) return this.finish(end);
      // Drain what the process wrote before exiting. A grandchild that keeps
      // the pipes open must not hold the end event back: once the pipes are
      // quiet (and not paused for a slow client), they are closed.
      let open = streams.length;
      const done = () => {
        clearInterval(timer);
        for (const s of streams) s?.destroy();
        this.finish(end);
      };
      for (const s of streams) {
        s?.once('close', () => {
          if (--open === 0) done();
        });
      }
      const timer = setInterval(() => {
        if (!this.paused && Date.now() - lastData >= EXIT_QUIET_MS) done();
      }, EXIT_QUIET_MS / 2);
    });
  }

  subscribe(): Subscriber {
    if (this.ended) throw new EnvdError(`process ${this.pid} has already ended`, Code.NotFound);
    const s = new Subscriber(this);
    this.subscribers.add(s);
    return s;
  }

  unsubscribe(s: Subscriber): void {
    if (!this.subscribers.delete(s)) return;
    s.queue.close();
    this.updateFlow();
  }

  private push(s: Subscriber, event: ProcessEvent, size: number): void {
    s.queue.push({ event, size });
    s.bytes += size;
  }

  private broadcastData(kind: 'stdout' | 'stderr' | 'pty', chunk: Buffer): void {
    if (this.ended || this.subscribers.size === 0) return;
    const event = create(ProcessEventSchema, {
      event: { case: 'data', value: { output: { case: kind, value: chunk } } },
    });
    const now = Date.now();
    for (const s of this.subscribers) {
      if (s.lagging) {
        s.dropped += chunk.length;
        continue;
      }
      this.push(s, event, chunk.length);
      if (s.bytes > HIGH_WATER) {
        if (this.pty) s.lagging = true;
        else s.overSince ??= now;
      }
    }
    this.updateFlow();
  }

  /** Pauses reading output while a (non-lagging) subscriber is over the high-water mark. */
  updateFlow(): void {
    if (!this.child || this.ended) return;
    const blocked = [...this.subscribers].some((s) => !s.lagging && s.bytes > HIGH_WATER);
    if (blocked && !this.paused) {
      this.paused = true;
      this.child.stdout?.pause();
      this.child.stderr?.pause();
      this.stallTimer = setInterval(() => this.checkStalled(), STALL_MS / 5);
    } else if (!blocked && this.paused) {
      this.paused = false;
      clearInterval(this.stallTimer);
      this.stallTimer = undefined;
      this.child.stdout?.resume();
      this.child.stderr?.resume();
    }
  }

  private checkStalled(): void {
    const now = Date.now();
    for (const s of this.subscribers) {
      if (!s.lagging && s.overSince !== undefined && now - s.overSince >= STALL_MS) s.lagging = true;
    }
    this.updateFlow();
  }

  private finish(end: EndFields): void {
    if (this.ended) return;
    this.ended = true;
    if (this.stallTimer) clearInterval(this.stallTimer);
    const event = create(ProcessEventSchema, { event: { case: 'end', value: end } });
    for (const s of this.subscribers) {
      this.push(s, event, 0);
      s.queue.close();
    }
    this.subscribers.clear();
    for (const fn of this.endListeners) fn();
  }

  /** Writes input; resolves once it is handed to the kernel (or buffered under 1 MiB). */
  async write(kind: 'stdin' | 'pty', data: Uint8Array): Promise<void> {
    if (this.ended) throw new EnvdError(`process ${this.pid} has ended`, Code.NotFound);
    if (this.pty) {
      if (kind !== 'pty') {
        throw new EnvdError('the process runs in a terminal: send input as pty, not stdin', Code.FailedPrecondition);
      }
      this.pty.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      return;
    }
    if (kind !== 'stdin') {
      throw new EnvdError('the process has no terminal: send input as stdin, not pty', Code.FailedPrecondition);
    }
    const stdin = this.child?.stdin;
    if (!stdin || !this.stdinOpen || stdin.writableEnded || stdin.destroyed) {
      throw new EnvdError(`stdin of process ${this.pid} is not enabled or already closed`, Code.FailedPrecondition);
    }
    if (!stdin.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength))) {
      // The process is not reading: wait for it rather than buffering without bound.
      await Promise.race([once(stdin, 'drain'), once(stdin, 'close')]);
    }
  }

  closeStdin(): void {
    if (this.pty) {
      throw new EnvdError(
        'cannot close stdin of a terminal process: send Ctrl+D (0x04) instead',
        Code.FailedPrecondition,
      );
    }
    const stdin = this.child?.stdin;
    this.stdinOpen = false;
    if (stdin && !stdin.writableEnded) stdin.end();
  }

  resize(cols: number, rows: number): void {
    if (!this.pty) throw new EnvdError(`process ${this.pid} has no terminal to resize`, Code.FailedPrecondition);
    if (cols < 1 || rows < 1 || cols > 65535 || rows > 65535) {
      throw new EnvdError(`invalid terminal size ${cols}x${rows}`, Code.InvalidArgument);
    }
    this.pty.resize(cols, rows);
  }

  /** Signals the whole process group (the process leads its own), so children go too. */
  signal(sig: NodeJS.Signals): void {
    try {
      process.kill(-this.pid, sig);
    } catch {
      try {
        process.kill(this.pid, sig);
      } catch {
        // already gone; its end event is on the way
      }
    }
  }
}
