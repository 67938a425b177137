// capsule.pty: interactive terminals over the /pty WebSocket. The terminal
// survives a disconnect; reconnect with its tag (output from then on).
import type WebSocket from 'ws';
import { InvalidArgumentError, WrennError, errorFromClose } from './errors.js';
import { parseFrame, type ApiClient } from './http.js';

export interface PtySize {
  cols: number;
  rows: number;
}

export interface PtyCreateOpts {
  cols?: number;
  rows?: number;
  /** Terminal output (raw bytes: escape sequences included). */
  onData?: (data: Uint8Array) => void;
  /** Program to run (default `/bin/bash`). */
  cmd?: string;
  args?: string[];
  cwd?: string;
  envs?: Record<string, string>;
  user?: string;
}

export interface PtyConnectOpts {
  onData?: (data: Uint8Array) => void;
}

/** A terminal in the capsule. */
export class PtyHandle {
  tag = '';
  pid: number | undefined;
  exitCode: number | undefined;
  private readonly exited: Promise<{ exitCode: number }>;
  private readonly ready: Promise<void>;
  private settled = false;

  constructor(
    private readonly ws: WebSocket,
    onData: ((data: Uint8Array) => void) | undefined,
  ) {
    let readyOk!: () => void;
    let readyFail!: (e: Error) => void;
    let exitOk!: (r: { exitCode: number }) => void;
    let exitFail!: (e: Error) => void;
    this.ready = new Promise((res, rej) => ((readyOk = res), (readyFail = rej)));
    this.exited = new Promise((res, rej) => ((exitOk = res), (exitFail = rej)));
    this.ready.catch(() => {});
    this.exited.catch(() => {});
    let lastError: string | undefined;
    const fail = (e: Error) => {
      if (this.settled) return;
      this.settled = true;
      readyFail(e);
      exitFail(e);
      ws.close();
    };
    ws.on('message', (raw) => {
      const m = parseFrame(raw);
      if (!m) return;
      switch (m.type) {
        case 'started':
          this.tag = String(m.tag ?? '');
          this.pid = Number(m.pid);
          readyOk();
          break;
        case 'output':
          if (typeof m.data === 'string') onData?.(Buffer.from(m.data, 'base64'));
          break;
        case 'exit':
          this.exitCode = Number(m.exit_code);
          this.settled = true;
          readyOk();
          exitOk({ exitCode: this.exitCode });
          ws.close();
          break;
        case 'ping':
          // The server closes connections it has not heard from in 120 s.
          if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'pong' }));
          break;
        case 'error':
          // Non-fatal errors (a dropped input frame) leave the session usable;
          // a fatal one comes before the close, whose code carries the HTTP status.
          if (m.fatal !== false) lastError = String(m.data ?? 'terminal error');
          break;
      }
    });
    ws.on('close', (code, reason) => fail(errorFromClose(code, reason.toString(), lastError)));
  }

  /** Resolves once the server confirmed the terminal runs (`started`, also sent on reconnect). */
  waitReady(): Promise<void> {
    return this.ready;
  }

  private send(msg: Record<string, unknown>): void {
    if (this.ws.readyState !== this.ws.OPEN) {
      throw new WrennError('the terminal connection is closed', 'stream_closed');
    }
    this.ws.send(JSON.stringify(msg));
  }

  /** Types into the terminal. */
  sendInput(data: string | Uint8Array): void {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
    if (bytes.length > 0) this.send({ type: 'input', data: bytes.toString('base64') });
  }

  resize(size: PtySize): void {
    checkSize(size.cols, size.rows);
    this.send({ type: 'resize', cols: size.cols, rows: size.rows });
  }

  /** Kills the terminal's process (SIGKILL). */
  kill(): void {
    this.send({ type: 'kill' });
  }

  /** Resolves with the exit code when the terminal's process exits. */
  wait(): Promise<{ exitCode: number }> {
    return this.exited;
  }

  /** Leaves the terminal running in the capsule; reconnect with `pty.connect(tag)`. */
  disconnect(): void {
    this.settled = true;
    this.ws.close();
  }
}

export class Pty {
  constructor(
    private readonly api: ApiClient,
    private readonly capsuleId: string,
  ) {}

  private path(): string {
    return `/v1/capsules/${encodeURIComponent(this.capsuleId)}/pty`;
  }

  /** Starts a terminal and resolves once it runs (`.tag` and `.pid` are set). */
  async create(opts: PtyCreateOpts = {}): Promise<PtyHandle> {
    const cols = opts.cols ?? 80;
    const rows = opts.rows ?? 24;
    checkSize(cols, rows);
    const ws = await this.api.openSocket(this.path());
    const handle = new PtyHandle(ws, opts.onData);
    ws.send(
      JSON.stringify({
        type: 'start',
        cmd: opts.cmd ?? '/bin/bash',
        args: opts.args ?? [],
        cols,
        rows,
        ...(opts.envs ? { envs: opts.envs } : {}),
        ...(opts.cwd ? { cwd: opts.cwd } : {}),
        ...(opts.user ? { user: opts.user } : {}),
      }),
    );
    await handle.waitReady();
    return handle;
  }

  /** Reattaches to a running terminal by its tag. */
  async connect(tag: string, opts: PtyConnectOpts = {}): Promise<PtyHandle> {
    if (!tag) throw new InvalidArgumentError('tag must not be empty', 'invalid_request');
    const ws = await this.api.openSocket(this.path());
    const handle = new PtyHandle(ws, opts.onData);
    handle.tag = tag;
    ws.send(JSON.stringify({ type: 'connect', tag }));
    await handle.waitReady();
    return handle;
  }
}

function checkSize(cols: number, rows: number): void {
  for (const [name, v] of [
    ['cols', cols],
    ['rows', rows],
  ] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 65535) {
      throw new InvalidArgumentError(`${name} must be an integer between 1 and 65535, got ${v}`, 'invalid_request');
    }
  }
}
