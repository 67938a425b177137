// Starts the real host agent (node dist/src/main.js) as a child process with
// its own data directory, network prefix, subnet and port, and gives tests
// Connect clients for it. The minimal template comes from the default data
// directory (built by scripts/setup.sh): its images/ is symlinked in.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { createClient, type Client, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { HostAgentService } from '@wrenn/contracts/gen/hostagent/v1/hostagent_pb';
import { newId } from '@wrenn/contracts';
import { Layout, defaultDataDir } from '../src/layout.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const MAIN_JS = path.resolve(here, '../src/main.js');

export type AgentClient = Client<typeof HostAgentService>;

export interface AgentOptions {
  /** Reuse an existing data directory (restart tests). */
  dataDir?: string;
  prefix: string;
  subnet: string;
  token?: string;
  env?: Record<string, string>;
}

export interface RunningAgent {
  proc: ChildProcess;
  port: number;
  dataDir: string;
  layout: Layout;
  /** h2c client (all RPCs, client streaming included). */
  client: AgentClient;
  /** HTTP/1.1 client (everything but client streaming). */
  client1: AgentClient;
  /** Client without the token. */
  anonymous: AgentClient;
  output: () => string;
  exited: Promise<number | null>;
  /** SIGTERM and wait. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait (crash). */
  kill(): Promise<number | null>;
  /** Terminate RPC (destroys every capsule, removes the agent's firewall chains) and wait for the exit. */
  terminate(): Promise<number | null>;
}

/**
 * A temp data directory whose images/minimal is a symlink to the default data
 * directory's minimal template (built by setup); tests may add their own
 * templates beside it without touching the shared one.
 */
export function makeDataDir(): string {
  const minimal = new Layout(defaultDataDir({})).minimalTemplateDir;
  if (!fs.existsSync(path.join(minimal, 'rootfs'))) {
    throw new Error(`the minimal template is missing at ${minimal}: run scripts/setup.sh first`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wrenn-agent-test-'));
  const layout = new Layout(dir);
  fs.mkdirSync(layout.imagesDir);
  fs.symlinkSync(minimal, layout.minimalTemplateDir);
  return dir;
}

export function removeDataDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

function clients(port: number, token: string | undefined) {
  const auth: Interceptor = (next) => (req) => {
    if (token) req.header.set('authorization', `Bearer ${token}`);
    return next(req);
  };
  const baseUrl = `http://127.0.0.1:${port}`;
  return {
    client: createClient(HostAgentService, createConnectTransport({ baseUrl, httpVersion: '2', interceptors: [auth] })),
    client1: createClient(
      HostAgentService,
      createConnectTransport({ baseUrl, httpVersion: '1.1', interceptors: [auth] }),
    ),
    anonymous: createClient(HostAgentService, createConnectTransport({ baseUrl, httpVersion: '1.1' })),
  };
}

export async function startAgent(opts: AgentOptions): Promise<RunningAgent> {
  const dataDir = opts.dataDir ?? makeDataDir();
  try {
    return await launch(opts, dataDir);
  } catch (err) {
    if (!opts.dataDir) removeDataDir(dataDir);
    throw err;
  }
}

async function launch(opts: AgentOptions, dataDir: string): Promise<RunningAgent> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    WRENN_DIR: dataDir,
    WRENN_HOST_LISTEN_ADDR: '127.0.0.1:0',
    WRENN_NET_PREFIX: opts.prefix,
    WRENN_SUBNET: opts.subnet,
    LOG_LEVEL: process.env.WRENN_TEST_LOG_LEVEL ?? 'info',
    ...(opts.token ? { WRENN_AGENT_TOKEN: opts.token } : { WRENN_AGENT_TOKEN: '' }),
    ...opts.env,
  };
  const proc = spawn(process.execPath, [MAIN_JS], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`agent did not start within 60 s:\n${out}`));
    }, 60_000);
    const onLine = (chunk: Buffer) => {
      out += chunk.toString();
      if (process.env.WRENN_TEST_AGENT_LOG) process.stderr.write(chunk);
      const m = /"port":(\d+)[^\n]*"msg":"host agent listening"/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    proc.stdout!.on('data', onLine);
    proc.stderr!.on('data', onLine);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited with ${code} before listening:\n${out}`));
    });
  });
  const waitExit = async (signal: NodeJS.Signals) => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    return exited;
  };
  const ours = clients(port, opts.token);
  return {
    proc,
    port,
    dataDir,
    layout: new Layout(dataDir),
    ...ours,
    output: () => out,
    exited,
    stop: () => waitExit('SIGTERM'),
    kill: () => waitExit('SIGKILL'),
    terminate: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        await ours.client.terminate({}).catch(() => proc.kill('SIGKILL'));
      }
      return exited;
    },
  };
}

export function newCapsuleId(): string {
  return newId('capsule').id;
}

export function randomToken(): string {
  return randomBytes(24).toString('hex');
}

/** Collects a server stream in the background so a test can wait for patterns while sending input. */
export class StreamReader<T> {
  readonly items: T[] = [];
  done = false;
  error: unknown = null;
  private waiters: (() => void)[] = [];
  readonly finished: Promise<void>;

  constructor(stream: AsyncIterable<T>) {
    this.finished = (async () => {
      try {
        for await (const item of stream) {
          this.items.push(item);
          this.wake();
        }
      } catch (err) {
        this.error = err;
      } finally {
        this.done = true;
        this.wake();
      }
    })();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Waits until `pred` holds over the items so far (or the stream ends / times out). */
  async waitFor(pred: (items: T[]) => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.items)) {
      if (this.done) throw new Error(`stream ended before ${what}${this.error ? `: ${String(this.error)}` : ''}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

export async function waitUntil(pred: () => Promise<boolean> | boolean, timeoutMs: number, what: string) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
