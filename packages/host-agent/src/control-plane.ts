// The host agent's side of host registration: the one-time `--register`
// exchange, the credentials file, heartbeats, and token refresh.
//
// Credentials live in `<data dir>/host-credentials.json` (0600), written
// atomically: a crash never leaves a half-written file. Heartbeats run every
// interval; a 401/403 triggers a refresh (new JWT + refresh token) and a retry.
// When refreshing finally fails the host has been cut off: every running
// capsule is paused and heartbeats stop. A 404 means the host was deleted:
// the credentials are removed and the agent shuts down.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from './manager.js';

export interface HostCredentials {
  host_id: string;
  /** Host JWT (X-Host-Token), 7 days. */
  token: string;
  refresh_token: string;
  /** Secret the control plane presents on every RPC to this agent. */
  agent_token: string;
  cp_url: string;
  address: string;
}

export const CREDENTIALS_FILE = 'host-credentials.json';

export class RegistrationError extends Error {
  override name = 'RegistrationError';
}

export function credentialsPath(dataDir: string): string {
  return path.join(dataDir, CREDENTIALS_FILE);
}

export function loadCredentials(dataDir: string): HostCredentials | null {
  let text: string;
  try {
    text = fs.readFileSync(credentialsPath(dataDir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const c = JSON.parse(text) as Partial<HostCredentials>;
  for (const k of ['host_id', 'token', 'refresh_token', 'agent_token', 'cp_url', 'address'] as const) {
    if (typeof c[k] !== 'string' || c[k] === '') {
      throw new RegistrationError(`${credentialsPath(dataDir)} is damaged (no ${k}); register the host again`);
    }
  }
  return c as HostCredentials;
}

export function saveCredentials(dataDir: string, c: HostCredentials): void {
  const file = credentialsPath(dataDir);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(c, null, 2) + '\n', { mode: 0o600 });
  fs.renameSync(tmp, file);
}

export function newAgentToken(): string {
  return randomBytes(32).toString('hex');
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
}

async function errorMessage(res: Response): Promise<string> {
  const text = await res.text().catch(() => '');
  try {
    const m = (JSON.parse(text) as { error?: { message?: string } }).error?.message;
    if (m) return m;
  } catch {
    // not our error shape
  }
  return `HTTP ${res.status}`;
}

/** Exchanges a registration token for credentials (and saves them). */
export async function register(opts: {
  cpUrl: string;
  token: string;
  address: string;
  agentToken: string;
  dataDir: string;
}): Promise<HostCredentials> {
  const st = await fs.promises.statfs(opts.dataDir).catch(() => null);
  let res: Response;
  try {
    res = await post(`${opts.cpUrl}/v1/hosts/register`, {
      token: opts.token,
      address: opts.address,
      arch: os.arch() === 'x64' ? 'x86_64' : os.arch() === 'arm64' ? 'aarch64' : os.arch(),
      cpu_cores: os.availableParallelism(),
      memory_mb: Math.floor(os.totalmem() / 1024 / 1024),
      disk_gb: st ? Math.floor((st.blocks * st.bsize) / 1024 ** 3) : 0,
      agent_token: opts.agentToken,
    });
  } catch (err) {
    throw new RegistrationError(`cannot reach the control plane at ${opts.cpUrl}: ${(err as Error).message}`);
  }
  if (res.status !== 201) throw new RegistrationError(`registration refused: ${await errorMessage(res)}`);
  const body = (await res.json()) as { host: { id: string }; token: string; refresh_token: string };
  const creds: HostCredentials = {
    host_id: body.host.id,
    token: body.token,
    refresh_token: body.refresh_token,
    agent_token: opts.agentToken,
    cp_url: opts.cpUrl,
    address: opts.address,
  };
  saveCredentials(opts.dataDir, creds);
  return creds;
}

export interface HeartbeatOptions {
  dataDir: string;
  creds: HostCredentials;
  intervalMs: number;
  log: Logger;
  /** Refresh failed for good: pause every running capsule. */
  onCutOff: () => Promise<void>;
  /** The control plane deleted this host. */
  onDeleted: () => void;
}

type Beat = 'ok' | 'auth' | 'deleted' | 'error';

export class Heartbeat {
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private inFlight: Promise<void> | null = null;
  private creds: HostCredentials;

  constructor(private readonly opts: HeartbeatOptions) {
    this.creds = opts.creds;
  }

  start(): void {
    const tick = () => {
      this.inFlight = this.beatOnce().finally(() => {
        this.inFlight = null;
        if (!this.stopped) this.timer = setTimeout(tick, this.opts.intervalMs);
      });
    };
    tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.inFlight;
  }

  private async send(): Promise<Beat> {
    try {
      const res = await post(`${this.creds.cp_url}/v1/hosts/${this.creds.host_id}/heartbeat`, undefined, {
        'x-host-token': this.creds.token,
      });
      await res.arrayBuffer().catch(() => {});
      if (res.status === 204) return 'ok';
      if (res.status === 401 || res.status === 403) return 'auth';
      if (res.status === 404) return 'deleted';
      this.opts.log.warn({ status: res.status }, 'heartbeat rejected');
      return 'error';
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'heartbeat failed: control plane unreachable');
      return 'error';
    }
  }

  /** One heartbeat, refreshing the credentials once if they were refused. */
  async beatOnce(): Promise<void> {
    let beat = await this.send();
    if (beat === 'auth') {
      const refreshed = await this.refresh();
      if (refreshed === 'refused') {
        this.stopped = true;
        this.opts.log.error({}, 'host credentials were revoked: pausing every capsule and stopping heartbeats');
        await this.opts.onCutOff().catch((err: unknown) => this.opts.log.error({ err }, 'pausing capsules failed'));
        return;
      }
      if (refreshed === 'ok') beat = await this.send();
    }
    if (beat === 'deleted') {
      this.stopped = true;
      this.opts.log.warn({}, 'the control plane deleted this host: removing its credentials and shutting down');
      fs.rmSync(credentialsPath(this.opts.dataDir), { force: true });
      this.opts.onDeleted();
    }
  }

  /** New JWT and refresh token; saved before use so a crash keeps a working pair. */
  private async refresh(): Promise<'ok' | 'refused' | 'error'> {
    let res: Response;
    try {
      res = await post(`${this.creds.cp_url}/v1/hosts/auth/refresh`, { refresh_token: this.creds.refresh_token });
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'token refresh failed: control plane unreachable');
      return 'error';
    }
    if (res.status === 401) {
      await res.arrayBuffer().catch(() => {});
      return 'refused';
    }
    if (res.status !== 200) {
      this.opts.log.warn({ status: res.status, message: await errorMessage(res) }, 'token refresh rejected');
      return 'error';
    }
    const body = (await res.json()) as { token: string; refresh_token: string };
    this.creds = { ...this.creds, token: body.token, refresh_token: body.refresh_token };
    saveCredentials(this.opts.dataDir, this.creds);
    this.opts.log.info({}, 'host token refreshed');
    return 'ok';
  }
}
