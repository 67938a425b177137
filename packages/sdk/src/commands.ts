// capsule.commands: run commands (collected, streamed, or in the background),
// list, kill and reconnect to processes.
import type WebSocket from 'ws';
import { InvalidArgumentError, NotFoundError, TimeoutError, errorFromClose } from './errors.js';
import { parseFrame, type ApiClient } from './http.js';
import type { ProcessInfo } from './types.js';

export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  /** How long the command ran (foreground runs without callbacks only). */
  durationMs?: number;
}

export interface RunOpts {
  /** When given, `cmd` is the program and these its arguments (no shell). Without, `cmd` runs under `/bin/bash -c`. */
  args?: string[];
  envs?: Record<string, string>;
  cwd?: string;
  /** User to run as (default: the template's user). */
  user?: string;
  /** Kill the command after this long (default: 30 s for collected runs, none for streamed ones; 0 = a day, the API's limit). */
  timeoutMs?: number;
  /** Start it and return a handle right away. */
  background?: boolean;
  /** Tag for a background process (reconnect by it later); the server makes one up when omitted. */
  tag?: string;
  /** Stream output as it comes (the result still collects all of it). */
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
}

export interface ConnectOpts {
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
}

export type Signal = 'SIGKILL' | 'SIGTERM';

/** The longest command timeout the API accepts (one day). */
const MAX_TIMEOUT_SEC = 86_400;

/** The output of one process over a WebSocket (exec/stream or processes/{selector}/stream). */
class OutputStream {
  pid: number | undefined;
  stdout = '';
  stderr = '';
  exitCode: number | undefined;
  readonly started: Promise<number>;
  readonly done: Promise<CommandResult>;
  private settled = false;

  constructor(
    readonly ws: WebSocket,
    opts: ConnectOpts,
  ) {
    let startOk!: (pid: number) => void;
    let startFail!: (e: Error) => void;
    let doneOk!: (r: CommandResult) => void;
    let doneFail!: (e: Error) => void;
    this.started = new Promise((res, rej) => ((startOk = res), (startFail = rej)));
    this.done = new Promise((res, rej) => ((doneOk = res), (doneFail = rej)));
    // Nobody may be listening to one of them (e.g. a handle never waited on).
    this.started.catch(() => {});
    this.done.catch(() => {});
    let lastError: string | undefined;
    const fail = (e: Error) => {
      if (this.settled) return;
      this.settled = true;
      startFail(e);
      doneFail(e);
      ws.close();
    };
    ws.on('message', (raw) => {
      const m = parseFrame(raw);
      if (!m) return;
      const data = typeof m.data === 'string' ? m.data : '';
      switch (m.type) {
        case 'start':
          this.pid = Number(m.pid);
          startOk(this.pid);
          break;
        case 'stdout':
          this.stdout += data;
          opts.onStdout?.(data);
          break;
        case 'stderr':
          this.stderr += data;
          opts.onStderr?.(data);
          break;
        case 'exit':
          this.exitCode = Number(m.exit_code);
          this.settled = true;
          doneOk({ stdout: this.stdout, stderr: this.stderr, exitCode: this.exitCode });
          ws.close();
          break;
        case 'error':
          // Non-fatal ones (e.g. the exit status in words) come before `exit`; a
          // fatal one before the close, whose code carries the HTTP status.
          if (m.fatal !== false) lastError = data || 'the process stream failed';
          break;
      }
    });
    ws.on('close', (code, reason) => fail(errorFromClose(code, reason.toString(), lastError)));
  }

  /** Ends the stream; a process started by exec/stream is stopped by the server. */
  stop(): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify({ type: 'stop' }));
    this.ws.close();
  }
}

/** A process running in the capsule: its output so far, wait for it, kill it. */
export class CommandHandle {
  constructor(
    /** Process id inside the capsule. */
    readonly pid: number,
    /** Tag of a background process. */
    readonly tag: string | undefined,
    private readonly commands: Commands,
    private readonly stream: OutputStream | undefined,
    private readonly attachError?: Error,
  ) {}

  get stdout(): string {
    return this.stream?.stdout ?? '';
  }
  get stderr(): string {
    return this.stream?.stderr ?? '';
  }
  /** Set once the process has exited (and we saw it). */
  get exitCode(): number | undefined {
    return this.stream?.exitCode;
  }

  /** Resolves with the collected output when the process exits. */
  wait(): Promise<CommandResult> {
    if (!this.stream) return Promise.reject(this.attachError);
    return this.stream.done;
  }

  /** Signals the process; false if it was already gone. */
  kill(signal: Signal = 'SIGKILL'): Promise<boolean> {
    return this.commands.kill(this.tag ?? this.pid, signal);
  }

  /** Stops receiving output; the process keeps running (reconnect with `commands.connect`). */
  disconnect(): void {
    this.stream?.ws.close();
  }
}

export class Commands {
  constructor(
    private readonly api: ApiClient,
    private readonly capsuleId: string,
  ) {}

  private path(rest = ''): string {
    return `/v1/capsules/${encodeURIComponent(this.capsuleId)}${rest}`;
  }

  /** Runs a command and waits for it; with `background: true` returns a handle right after it started. */
  run(cmd: string, opts: RunOpts & { background: true }): Promise<CommandHandle>;
  run(cmd: string, opts?: RunOpts & { background?: false }): Promise<CommandResult>;
  run(cmd: string, opts?: RunOpts): Promise<CommandResult | CommandHandle>;
  async run(cmd: string, opts: RunOpts = {}): Promise<CommandResult | CommandHandle> {
    if (typeof cmd !== 'string' || cmd === '')
      throw new InvalidArgumentError('cmd must be a non-empty string', 'invalid_request');
    const [program, args] = opts.args ? [cmd, opts.args] : ['/bin/bash', ['-c', cmd]];
    if (opts.timeoutMs !== undefined && !(opts.timeoutMs >= 0)) {
      throw new InvalidArgumentError('timeoutMs must be a non-negative number', 'invalid_request');
    }
    // 0 means no limit of ours: the longest the API allows.
    const timeoutSec =
      opts.timeoutMs === undefined
        ? undefined
        : opts.timeoutMs === 0
          ? MAX_TIMEOUT_SEC
          : Math.ceil(opts.timeoutMs / 1000);
    if (opts.background) return this.runBackground(program, args, opts);
    if (opts.onStdout || opts.onStderr) return this.runStreamed(program, args, timeoutSec, opts);

    const body = {
      cmd: program,
      args,
      ...(timeoutSec !== undefined ? { timeout_sec: timeoutSec } : {}),
      ...commonFields(opts),
    };
    // The HTTP deadline must outlast the command's own (30 s by default on the server).
    const res = await this.api.json<ExecResponseWire>('POST', this.path('/exec'), {
      json: body,
      timeoutMs: Math.max(this.api.config.requestTimeoutMs, ((timeoutSec || 30) + 15) * 1000),
    });
    const decode = (s: string) => (res.encoding === 'base64' ? Buffer.from(s, 'base64').toString('utf8') : s);
    return {
      stdout: decode(res.stdout ?? ''),
      stderr: decode(res.stderr ?? ''),
      exitCode: res.exit_code,
      durationMs: res.duration_ms,
    };
  }

  private async runStreamed(
    cmd: string,
    args: string[],
    timeoutSec: number | undefined,
    opts: RunOpts,
  ): Promise<CommandResult> {
    const ws = await this.api.openSocket(this.path('/exec/stream'));
    const stream = new OutputStream(ws, opts);
    ws.send(
      JSON.stringify({
        type: 'start',
        cmd,
        args,
        ...(timeoutSec ? { timeout_sec: timeoutSec } : {}),
        ...commonFields(opts),
      }),
    );
    if (!timeoutSec || timeoutSec >= MAX_TIMEOUT_SEC) return stream.done;
    // Also enforced here, in case the server has no deadline of its own for streams.
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        stream.stop();
        reject(new TimeoutError(`command timed out after ${timeoutSec} s and was stopped`, 'timeout'));
      }, timeoutSec * 1000);
    });
    try {
      return await Promise.race([stream.done, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async runBackground(cmd: string, args: string[], opts: RunOpts): Promise<CommandHandle> {
    const res = await this.api.json<{ pid: number; tag: string }>('POST', this.path('/exec'), {
      json: { cmd, args, background: true, ...(opts.tag ? { tag: opts.tag } : {}), ...commonFields(opts) },
    });
    // Attach to its output at once; a process that already ended cannot be
    // attached to any more (its output was not kept), which wait() reports.
    try {
      return await this.connect(res.tag || res.pid, opts);
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      const gone = new NotFoundError(
        `process ${res.pid} ended before its output could be attached; its exit code is not available`,
        'not_found',
      );
      return new CommandHandle(res.pid, res.tag, this, undefined, gone);
    }
  }

  /** Attaches to a running process by pid or tag: streams its output from now on. */
  async connect(pidOrTag: number | string, opts: ConnectOpts = {}): Promise<CommandHandle> {
    const sel = selector(pidOrTag);
    const ws = await this.api.openSocket(this.path(`/processes/${encodeURIComponent(sel)}/stream`));
    const stream = new OutputStream(ws, opts);
    const pid = await stream.started;
    return new CommandHandle(pid, typeof pidOrTag === 'string' ? pidOrTag : undefined, this, stream);
  }

  /** Processes started through the API (exec, background, PTY) that are still running. */
  async list(): Promise<ProcessInfo[]> {
    const res = await this.api.json<{ processes: Array<{ pid: number; tag?: string; cmd: string; args?: string[] }> }>(
      'GET',
      this.path('/processes'),
    );
    return res.processes.map((p) => ({
      pid: p.pid,
      ...(p.tag ? { tag: p.tag } : {}),
      cmd: p.cmd,
      args: p.args ?? [],
    }));
  }

  /** Signals a process by pid or tag; false if there was no such process. */
  async kill(pidOrTag: number | string, signal: Signal = 'SIGKILL'): Promise<boolean> {
    const sel = selector(pidOrTag);
    try {
      await this.api.request('DELETE', this.path(`/processes/${encodeURIComponent(sel)}`), { query: { signal } });
      return true;
    } catch (err) {
      if (err instanceof NotFoundError && err.code !== 'capsule_not_found') return false;
      throw err;
    }
  }
}

interface ExecResponseWire {
  stdout: string;
  stderr: string;
  exit_code: number;
  duration_ms?: number;
  encoding?: 'utf-8' | 'base64';
}

function commonFields(opts: RunOpts): Record<string, unknown> {
  return {
    ...(opts.envs ? { envs: opts.envs } : {}),
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    ...(opts.user ? { user: opts.user } : {}),
  };
}

function selector(pidOrTag: number | string): string {
  if (typeof pidOrTag === 'number') {
    if (!Number.isInteger(pidOrTag) || pidOrTag <= 0) {
      throw new InvalidArgumentError(`pid ${pidOrTag} is not a positive integer`, 'invalid_request');
    }
    return String(pidOrTag);
  }
  if (pidOrTag === '') throw new InvalidArgumentError('process tag must not be empty', 'invalid_request');
  return pidOrTag;
}
