// Capsule: create / connect / list, lifecycle, and the commands, files and
// pty modules of one capsule.
import { Commands } from './commands.js';
import { capsuleHost, resolveConfig, type ConnectionOpts } from './config.js';
import { ConflictError, InvalidArgumentError, NotFoundError, TimeoutError, WrennError } from './errors.js';
import { Files } from './files.js';
import { ApiClient } from './http.js';
import { Pty } from './pty.js';
import {
  toCapsuleInfo,
  toTemplateInfo,
  type CapsuleInfo,
  type CapsuleStatus,
  type CapsuleWire,
  type TemplateInfo,
  type TemplateWire,
} from './types.js';

export interface CapsuleCreateOpts extends ConnectionOpts {
  /** Template name (default `minimal`). */
  template?: string;
  vcpus?: number;
  memoryMb?: number;
  diskSizeMb?: number;
  /** Inactivity TTL: the capsule is paused after this long without exec or ping (0 = never). */
  timeoutSec?: number;
  /** Same as timeoutSec, in ms (rounded up to whole seconds). */
  timeoutMs?: number;
  /** Your own key/value labels (filter `Capsule.list` by them). */
  metadata?: Record<string, string>;
}

export interface CapsuleListOpts extends ConnectionOpts {
  /** Only capsules in these states (default: all but stopped and error). */
  status?: CapsuleStatus | CapsuleStatus[];
  /** Only capsules whose metadata has all these key/values. */
  metadata?: Record<string, string>;
}

/** Creation can be asynchronous on the server: how long to wait for `running`. */
const START_TIMEOUT_MS = 5 * 60_000;
const POLL_MS = 250;

export class Capsule {
  readonly commands: Commands;
  readonly files: Files;
  readonly pty: Pty;

  private constructor(
    /** `cl-…` */
    readonly id: string,
    private readonly api: ApiClient,
  ) {
    this.commands = new Commands(api, id);
    this.files = new Files(api, id);
    this.pty = new Pty(api, id);
  }

  /** Creates a capsule and resolves once it is running. */
  static async create(opts: CapsuleCreateOpts = {}): Promise<Capsule> {
    const api = new ApiClient(resolveConfig(opts));
    if (opts.timeoutSec !== undefined && opts.timeoutMs !== undefined) {
      throw new InvalidArgumentError('give timeoutSec or timeoutMs, not both', 'invalid_request');
    }
    const timeoutSec = opts.timeoutMs !== undefined ? Math.ceil(opts.timeoutMs / 1000) : opts.timeoutSec;
    const body = {
      ...(opts.template !== undefined ? { template: opts.template } : {}),
      ...(opts.vcpus !== undefined ? { vcpus: opts.vcpus } : {}),
      ...(opts.memoryMb !== undefined ? { memory_mb: opts.memoryMb } : {}),
      ...(opts.diskSizeMb !== undefined ? { disk_size_mb: opts.diskSizeMb } : {}),
      ...(timeoutSec !== undefined ? { timeout_sec: timeoutSec } : {}),
      ...(opts.metadata !== undefined ? { metadata: opts.metadata } : {}),
    };
    // Creating waits for the capsule's agent to answer: allow more than a plain request.
    const created = await api.json<CapsuleWire>('POST', '/v1/capsules', {
      json: body,
      timeoutMs: Math.max(api.config.requestTimeoutMs, 3 * 60_000),
    });
    const capsule = new Capsule(created.id, api);
    await capsule.waitRunning(created);
    return capsule;
  }

  /**
   * An instance for a capsule id without any request and whatever its state
   * (e.g. to pause or resume it). `connect` is what you usually want.
   */
  static attach(id: string, opts: ConnectionOpts = {}): Capsule {
    return new Capsule(checkId(id), new ApiClient(resolveConfig(opts)));
  }

  /** Attaches to an existing capsule, resuming it if it is paused. */
  static async connect(id: string, opts: ConnectionOpts & { autoResume?: boolean } = {}): Promise<Capsule> {
    const capsule = Capsule.attach(id, opts);
    const info = await capsule.rawInfo();
    if (info.status === 'paused' && opts.autoResume === false) {
      throw new ConflictError(`capsule ${id} is paused`, 'invalid_state');
    }
    if (info.status === 'paused') await capsule.resume();
    else await capsule.waitRunning(info);
    return capsule;
  }

  /** Your team's capsules (stopped ones are not listed), newest first. */
  static async list(opts: CapsuleListOpts = {}): Promise<CapsuleInfo[]> {
    const api = new ApiClient(resolveConfig(opts));
    const status = Array.isArray(opts.status) ? opts.status.join(',') : opts.status;
    // One parameter holding URL-encoded `k=v&k2=v2` (as in E2B).
    const metadata = opts.metadata ? new URLSearchParams(opts.metadata).toString() : undefined;
    const query = { status, metadata };
    const list = await api.json<CapsuleWire[]>('GET', '/v1/capsules', { query });
    return list.map(toCapsuleInfo);
  }

  /** Destroys a capsule by id; false if it was already destroyed or never existed. */
  static async kill(id: string, opts: ConnectionOpts = {}): Promise<boolean> {
    const api = new ApiClient(resolveConfig(opts));
    return destroy(api, checkId(id));
  }

  static async getInfo(id: string, opts: ConnectionOpts = {}): Promise<CapsuleInfo> {
    const api = new ApiClient(resolveConfig(opts));
    return toCapsuleInfo(await api.json<CapsuleWire>('GET', `/v1/capsules/${encodeURIComponent(checkId(id))}`));
  }

  /** Templates you can create capsules from (your team's and the platform's). */
  static async listTemplates(opts: ConnectionOpts & { type?: 'base' | 'snapshot' } = {}): Promise<TemplateInfo[]> {
    const api = new ApiClient(resolveConfig(opts));
    const list = await api.json<TemplateWire[]>('GET', '/v1/snapshots', { query: { type: opts.type } });
    return list.map(toTemplateInfo);
  }

  private path(rest = ''): string {
    return `/v1/capsules/${encodeURIComponent(this.id)}${rest}`;
  }

  private rawInfo(): Promise<CapsuleWire> {
    return this.api.json<CapsuleWire>('GET', this.path());
  }

  async info(): Promise<CapsuleInfo> {
    return toCapsuleInfo(await this.rawInfo());
  }

  async isRunning(): Promise<boolean> {
    return (await this.rawInfo()).status === 'running';
  }

  /** Freezes the capsule: its processes and files stay, it uses no CPU. */
  async pause(): Promise<CapsuleInfo> {
    const w = await this.api.json<CapsuleWire>('POST', this.path('/pause'), {
      timeoutMs: Math.max(this.api.config.requestTimeoutMs, 2 * 60_000),
    });
    return toCapsuleInfo(w);
  }

  async resume(): Promise<CapsuleInfo> {
    const w = await this.api.json<CapsuleWire>('POST', this.path('/resume'), {
      timeoutMs: Math.max(this.api.config.requestTimeoutMs, 3 * 60_000),
    });
    return toCapsuleInfo(await this.waitRunning(w));
  }

  /** Destroys the capsule; false if it was already destroyed or never existed. */
  kill(): Promise<boolean> {
    return destroy(this.api, this.id);
  }

  /**
   * Sets the capsule's idle timeout: it is paused after `timeoutMs` without
   * activity (commands, files, terminals, pings), counted from now; 0 means
   * never. A paused capsule gets the new timeout when it is resumed. Wrenn
   * pauses an idle capsule rather than destroying it, and counts whole
   * seconds (rounded up).
   */
  async setTimeout(timeoutMs: number): Promise<CapsuleInfo> {
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
      throw new InvalidArgumentError('timeoutMs must be a non-negative number', 'invalid_request');
    }
    const w = await this.api.json<CapsuleWire>('POST', this.path('/timeout'), {
      json: { timeout_sec: Math.ceil(timeoutMs / 1000) },
    });
    return toCapsuleInfo(w);
  }

  /** Restarts the capsule's inactivity timer. */
  async ping(): Promise<void> {
    await this.api.request('POST', this.path('/ping'));
  }

  /**
   * Host name of `port` inside the capsule behind the control plane's port
   * proxy: `{port}-{id}.{domain}`. Requests to it need the same X-API-Key.
   */
  getHost(port: number): string {
    return capsuleHost(this.id, port, this.api.config.domain);
  }

  /** Waits until the capsule is running (creation and resume may finish after the response). */
  private async waitRunning(first: CapsuleWire): Promise<CapsuleWire> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    let w = first;
    for (;;) {
      if (w.status === 'running') return w;
      if (w.status !== 'pending' && w.status !== 'starting') {
        const why = w.error ? `: ${w.error}` : '';
        if (w.status === 'error') throw new WrennError(`capsule ${this.id} failed to start${why}`, 'capsule_error');
        throw new ConflictError(`capsule ${this.id} is ${w.status}${why}`, 'invalid_state');
      }
      if (Date.now() > deadline) {
        throw new TimeoutError(`capsule ${this.id} is still ${w.status} after ${START_TIMEOUT_MS / 1000} s`, 'timeout');
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
      w = await this.rawInfo();
    }
  }
}

async function destroy(api: ApiClient, id: string): Promise<boolean> {
  try {
    // The API answers 204 for a capsule already stopped; tell that case apart.
    const cur = await api.json<CapsuleWire>('GET', `/v1/capsules/${encodeURIComponent(id)}`);
    if (cur.status === 'stopped') return false;
    await api.request('DELETE', `/v1/capsules/${encodeURIComponent(id)}`, {
      timeoutMs: Math.max(api.config.requestTimeoutMs, 2 * 60_000),
    });
    return true;
  } catch (err) {
    if (err instanceof NotFoundError) return false;
    throw err;
  }
}

function checkId(id: string): string {
  if (typeof id !== 'string' || id === '')
    throw new InvalidArgumentError('capsule id must not be empty', 'invalid_request');
  return id;
}
