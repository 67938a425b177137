// Shared test plumbing: a real envd child process on a random port, Connect
// clients for it, throwaway users and temp directories.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { createClient, type Client } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { Process, type StartResponse, type ConnectResponse } from '@wrenn/contracts/gen/process/process_pb';
import { Filesystem } from '@wrenn/contracts/gen/filesystem/filesystem_pb';

const here = path.dirname(fileURLToPath(import.meta.url));
/** packages/envd/dist/src/main.js */
export const MAIN_JS = path.resolve(here, '../src/main.js');

export interface Envd {
  port: number;
  baseUrl: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** Starts envd (dist/src/main.js unless `entry` is given) and waits for its "listening" line. */
export async function startEnvd(args: string[] = [], entry = MAIN_JS, env?: NodeJS.ProcessEnv): Promise<Envd> {
  const child = spawn(process.execPath, [entry, '--port', '0', '--host', '127.0.0.1', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: env ?? process.env,
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`envd did not start: ${stderr}`)), 10_000);
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /envd listening on (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`envd exited with ${code}: ${stderr}`));
    });
  });
  return {
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    child,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export interface Clients {
  process: Client<typeof Process>;
  fs: Client<typeof Filesystem>;
}

export function clients(baseUrl: string, httpVersion: '1.1' | '2' = '1.1'): Clients {
  const transport = createConnectTransport({ baseUrl, httpVersion });
  return { process: createClient(Process, transport), fs: createClient(Filesystem, transport) };
}

/** Call options acting as `user` (E2B style) and/or carrying an access token. */
export function as(user?: string, token?: string): { headers: Record<string, string> } {
  const headers: Record<string, string> = {};
  if (user) headers.authorization = 'Basic ' + Buffer.from(`${user}:`).toString('base64');
  if (token) headers['x-access-token'] = token;
  return { headers };
}

export interface Collected {
  pid: number | undefined;
  stdout: Buffer;
  stderr: Buffer;
  pty: Buffer;
  end: { exitCode: number; exited: boolean; status: string; error?: string } | undefined;
  keepalives: number;
  order: string[];
}

/** Reads a Start/Connect stream to its end. */
export async function collect(stream: AsyncIterable<StartResponse | ConnectResponse>): Promise<Collected> {
  const c: Collected = {
    pid: undefined,
    stdout: Buffer.alloc(0),
    stderr: Buffer.alloc(0),
    pty: Buffer.alloc(0),
    end: undefined,
    keepalives: 0,
    order: [],
  };
  for await (const msg of stream) {
    const ev = msg.event?.event;
    if (!ev) continue;
    c.order.push(ev.case ?? '');
    if (ev.case === 'start') c.pid = ev.value.pid;
    else if (ev.case === 'keepalive') c.keepalives++;
    else if (ev.case === 'end') c.end = ev.value;
    else if (ev.case === 'data') {
      const out = ev.value.output;
      if (out.case === 'stdout') c.stdout = Buffer.concat([c.stdout, out.value]);
      if (out.case === 'stderr') c.stderr = Buffer.concat([c.stderr, out.value]);
      if (out.case === 'pty') c.pty = Buffer.concat([c.pty, out.value]);
    }
  }
  return c;
}

export function tempDir(prefix = 'wrenn-envd-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface TestUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  extraGroup: string;
  extraGid: number;
  remove(): void;
}

/** A throwaway user with its own home and one supplementary group. */
export function createUser(): TestUser {
  const suffix = randomBytes(4).toString('hex');
  const name = `wet${suffix}`;
  const extraGroup = `weg${suffix}`;
  const base = tempDir('wrenn-envd-home-');
  fs.chmodSync(base, 0o755);
  const home = path.join(base, name);
  execFileSync('groupadd', [extraGroup]);
  execFileSync('useradd', ['-m', '-d', home, '-s', '/bin/bash', '-G', extraGroup, name]);
  const uid = Number(execFileSync('id', ['-u', name]).toString().trim());
  const gid = Number(execFileSync('id', ['-g', name]).toString().trim());
  const extraGid = Number(execFileSync('getent', ['group', extraGroup]).toString().split(':')[2]);
  return {
    name,
    uid,
    gid,
    home,
    extraGroup,
    extraGid,
    remove: () => {
      try {
        execFileSync('userdel', ['-f', name]);
      } catch {
        // already gone
      }
      try {
        execFileSync('groupdel', [extraGroup]);
      } catch {
        // already gone
      }
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
}

/** Polls `fn` until it returns a truthy value or `ms` pass. */
export async function waitFor<T>(fn: () => T | Promise<T>, ms = 5000, what = 'condition'): Promise<NonNullable<T>> {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
