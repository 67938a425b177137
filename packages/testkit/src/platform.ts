// A real Wrenn platform for end-to-end tests and benchmarks: a fresh
// PostgreSQL database, the control plane as a child process, a first admin
// with an API key, and host agents as child processes, each registered through
// the public flow (POST /v1/hosts → `--register <token> --address <ip:port>`).
// Nothing is mocked: tests drive it through the public API.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
export const CP_MAIN = path.join(REPO_ROOT, 'packages/control-plane/dist/src/main.js');
export const AGENT_MAIN = path.join(REPO_ROOT, 'packages/host-agent/dist/src/main.js');
const ADMIN_DB_URL = process.env.WRENN_TEST_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
/** The minimal template built by scripts/setup.sh, shared read-only by every test agent. */
const MINIMAL_TEMPLATE = path.join(
  process.env.WRENN_DIR || path.join(REPO_ROOT, '.wrenn', 'data'),
  'images',
  'minimal',
);

export interface PlatformOptions {
  /** 1-3 lowercase letters/digits, unique per test file: agent i uses network prefix `${prefix}${i}`. */
  prefix: string;
  /** Two octets, e.g. '10.240': agent i gets `${subnetBase}.${i * 16}.0/20`. */
  subnetBase: string;
  /** Host agents to start (default 1). */
  agents?: number;
  /** Extra control plane environment (e.g. WRENN_HOST_HEARTBEAT_TIMEOUT_SEC). */
  cpEnv?: Record<string, string>;
  /** Extra host agent environment (e.g. WRENN_HEARTBEAT_INTERVAL_SEC). */
  agentEnv?: Record<string, string>;
  /** Echo child output to stderr (also on when WRENN_TEST_PLATFORM_LOG is set). */
  verbose?: boolean;
}

export interface TestAgent {
  index: number;
  /** `host-…` */
  hostId: string;
  address: string;
  dataDir: string;
  output(): string;
  running(): boolean;
  /** SIGKILL (a crash): capsules keep running, the agent stops answering. */
  kill(): Promise<void>;
  /** SIGTERM: the agent exits, leaving its capsules running. */
  stop(): Promise<void>;
  /** Starts the agent again from its data directory (saved credentials, no token). */
  start(): Promise<void>;
}

export interface TeamCredentials {
  email: string;
  password: string;
  jwt: string;
  teamId: string;
  apiKey: string;
}

export interface Platform {
  baseUrl: string;
  /** The admin team's API key. */
  apiKey: string;
  adminJwt: string;
  adminEmail: string;
  adminPassword: string;
  teamId: string;
  agents: TestAgent[];
  /** The test database, for assertions only. */
  pg: pg.Pool;
  /** Its URL (e.g. to run a second control plane's workers against it). */
  databaseUrl: string;
  /** A new user with their own team and API key. */
  newTeam(): Promise<TeamCredentials>;
  /** Registers and starts one more host agent. */
  addAgent(): Promise<TestAgent>;
  cpLogs(): string;
  /** Stops the control plane (SIGTERM; SIGKILL with `crash`) and starts it again, optionally with changed environment. */
  restartControlPlane(env?: Record<string, string>, opts?: { crash?: boolean }): Promise<void>;
  /** Destroys every capsule, stops every process, drops the database, removes data directories. */
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | null | undefined | false>,
  ms = 60_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Child {
  proc: ChildProcess;
  out: string;
  exited: Promise<void>;
}

function launch(args: string[], env: NodeJS.ProcessEnv, echo: boolean): Child {
  const proc = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const child: Child = { proc, out: '', exited: new Promise((r) => proc.once('exit', () => r())) };
  const onData = (d: Buffer) => {
    child.out += d.toString();
    if (child.out.length > 4_000_000) child.out = child.out.slice(-2_000_000);
    if (echo) process.stderr.write(d);
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  return child;
}

async function signal(child: Child | null, sig: NodeJS.Signals): Promise<void> {
  if (!child || child.proc.exitCode !== null || child.proc.signalCode !== null) return;
  child.proc.kill(sig);
  await child.exited;
}

async function api<T>(baseUrl: string, method: string, url: string, opts: { jwt?: string; body?: unknown } = {}) {
  const res = await fetch(baseUrl + url, {
    method,
    headers: {
      ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(opts.jwt ? { authorization: `Bearer ${opts.jwt}` } : {}),
    },
    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

export async function startPlatform(opts: PlatformOptions): Promise<Platform> {
  if (!/^[a-z][a-z0-9]{0,2}$/.test(opts.prefix)) throw new Error('prefix must be 1-3 lowercase letters/digits');
  if (!/^\d{1,3}\.\d{1,3}$/.test(opts.subnetBase)) throw new Error("subnetBase must look like '10.240'");
  if (!fs.existsSync(path.join(MINIMAL_TEMPLATE, 'rootfs'))) {
    throw new Error(`the minimal template is missing at ${MINIMAL_TEMPLATE}: run scripts/setup.sh first`);
  }
  const echo = Boolean(opts.verbose || process.env.WRENN_TEST_PLATFORM_LOG);
  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    for (const fn of cleanups.reverse()) await fn().catch(() => {});
  };

  try {
    // Database.
    const dbName = `wrenn_e2e_${randomBytes(6).toString('hex')}`;
    const admin = new pg.Client({ connectionString: ADMIN_DB_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${dbName}`);
    await admin.end();
    const dbUrl = new URL(ADMIN_DB_URL);
    dbUrl.pathname = '/' + dbName;
    const pool = new pg.Pool({ connectionString: dbUrl.toString(), max: 4 });
    // An idle connection the server ends (the database dropped at stop, a server restart) must not
    // crash the test process: pg emits that on the pool, and an unhandled 'error' event throws.
    pool.on('error', (err) => {
      if (opts.verbose || process.env.WRENN_TEST_PLATFORM_LOG)
        process.stderr.write(`testkit: idle database connection: ${err.message}\n`);
    });
    cleanups.push(async () => {
      await pool.end();
      const c = new pg.Client({ connectionString: ADMIN_DB_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
      await c.end();
    });

    const root = fs.mkdtempSync(path.join(os.tmpdir(), `wrenn-e2e-${opts.prefix}-`));
    cleanups.push(async () => fs.rmSync(root, { recursive: true, force: true }));
    const cpData = path.join(root, 'cp');
    const cpPort = await freePort();
    const baseUrl = `http://127.0.0.1:${cpPort}`;
    // The test runner's own REDIS_URL is not passed on; a test asks for Redis with cpEnv.REDIS_URL.
    const { REDIS_URL: _ignored, ...parentEnv } = process.env;
    const cpEnv: NodeJS.ProcessEnv = {
      ...parentEnv,
      DATABASE_URL: dbUrl.toString(),
      WRENN_DATA_DIR: cpData,
      WRENN_CP_LISTEN_ADDR: `127.0.0.1:${cpPort}`,
      WRENN_PUBLIC_URL: baseUrl,
      LOG_LEVEL: process.env.WRENN_TEST_LOG_LEVEL ?? 'info',
      WRENN_HOST_MONITOR_INTERVAL_SEC: '1',
      ...opts.cpEnv,
    };

    // The first admin, exactly as `npm start` makes it.
    const adminEmail = `admin-${opts.prefix}@wrenn.test`;
    const adminPassword = randomBytes(12).toString('base64url');
    const boot = launch(
      [CP_MAIN, 'bootstrap-admin', '--email', adminEmail, '--name', 'Admin'],
      { ...cpEnv, WRENN_ADMIN_PASSWORD: adminPassword, LOG_LEVEL: 'warn' },
      echo,
    );
    await boot.exited;
    if (boot.proc.exitCode !== 0) throw new Error(`bootstrap-admin failed:\n${boot.out}`);
    const bootResult = JSON.parse(boot.out.trim().split('\n').pop()!) as { api_key: string; team_id: string };

    let cp: Child | null = null;
    let cpLog = '';
    const startCp = async () => {
      cp = launch([CP_MAIN, 'serve'], cpEnv, echo);
      const me = cp;
      await waitFor('the control plane', async () => {
        if (me.proc.exitCode !== null) throw new Error(`control plane exited:\n${me.out}`);
        return (await fetch(`${baseUrl}/health`)).ok;
      });
    };
    const stopCp = async (sig: NodeJS.Signals = 'SIGTERM') => {
      const me = cp;
      await signal(me, sig);
      if (me) cpLog += me.out;
      cp = null;
    };
    await startCp();
    cleanups.push(() => stopCp());

    const login = async () =>
      (
        await api<{ token: string }>(baseUrl, 'POST', '/v1/auth/login', {
          body: { email: adminEmail, password: adminPassword },
        })
      ).token;
    let adminJwt = await login();

    const agents: TestAgent[] = [];
    const agentsRoot = path.join(root, 'agents');

    const addAgent = async (): Promise<TestAgent> => {
      const index = agents.length;
      const dataDir = path.join(agentsRoot, String(index));
      fs.mkdirSync(path.join(dataDir, 'images'), { recursive: true });
      fs.symlinkSync(MINIMAL_TEMPLATE, path.join(dataDir, 'images', 'minimal'));
      const port = await freePort();
      const address = `127.0.0.1:${port}`;
      const { host, registration_token } = await api<{ host: { id: string }; registration_token: string }>(
        baseUrl,
        'POST',
        '/v1/hosts',
        { jwt: adminJwt, body: { type: 'regular', provider: 'test' } },
      );
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        WRENN_DIR: dataDir,
        WRENN_HOST_LISTEN_ADDR: address,
        WRENN_NET_PREFIX: `${opts.prefix}${index}`,
        WRENN_SUBNET: `${opts.subnetBase}.${index * 16}.0/20`,
        WRENN_CP_URL: baseUrl,
        WRENN_AGENT_TOKEN: '',
        WRENN_HEARTBEAT_INTERVAL_SEC: '2',
        LOG_LEVEL: process.env.WRENN_TEST_LOG_LEVEL ?? 'info',
        ...opts.agentEnv,
      };
      let child: Child | null = null;
      let log = '';
      const waitOnline = async () => {
        const me = child!;
        await waitFor(`host agent ${index} online`, async () => {
          if (me.proc.exitCode !== null) throw new Error(`host agent ${index} exited:\n${me.out}`);
          const h = await api<{ status: string }>(baseUrl, 'GET', `/v1/hosts/${host.id}`, { jwt: adminJwt });
          // The control plane marks the host online before the agent has saved its credentials.
          const saved = fs.existsSync(path.join(dataDir, 'host-credentials.json'));
          return h.status === 'online' && saved && me.out.includes('host agent listening');
        });
      };
      const agent: TestAgent = {
        index,
        hostId: host.id,
        address,
        dataDir,
        output: () => log + (child?.out ?? ''),
        running: () => child !== null && child.proc.exitCode === null && child.proc.signalCode === null,
        async kill() {
          await signal(child, 'SIGKILL');
          log += child?.out ?? '';
          child = null;
        },
        async stop() {
          await signal(child, 'SIGTERM');
          log += child?.out ?? '';
          child = null;
        },
        async start() {
          if (agent.running()) return;
          child = launch([AGENT_MAIN], env, echo);
          await waitOnline();
        },
      };
      child = launch([AGENT_MAIN, '--register', registration_token, '--address', address], env, echo);
      agents.push(agent);
      await waitOnline();
      return agent;
    };

    // Capsules first (Terminate destroys them and removes the agent's host setup), then the processes.
    cleanups.push(async () => {
      await Promise.all(
        agents.map(async (a) => {
          const file = path.join(a.dataDir, 'host-credentials.json');
          // No credentials: the host was deleted (and terminated) by the test itself.
          if (!fs.existsSync(file)) return a.kill();
          // A dead agent still owns capsules: start it so it can clean them up.
          if (!a.running()) await a.start().catch(() => {});
          const creds = JSON.parse(fs.readFileSync(file, 'utf8')) as { agent_token: string };
          // Connect's JSON unary protocol is plain HTTP: no generated client needed here.
          await fetch(`http://${a.address}/hostagent.v1.HostAgentService/Terminate`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${creds.agent_token}` },
            body: '{}',
            signal: AbortSignal.timeout(60_000),
          }).catch(() => {});
          await waitFor(`host agent ${a.index} to exit`, async () => !a.running(), 60_000).catch(() => a.kill());
          await a.stop();
        }),
      );
    });

    for (let i = 0; i < (opts.agents ?? 1); i++) await addAgent();

    const newTeam = async (): Promise<TeamCredentials> => {
      const email = `user-${randomBytes(5).toString('hex')}@wrenn.test`;
      const password = randomBytes(12).toString('base64url');
      const signup = await api<{ token: string; team_id: string }>(baseUrl, 'POST', '/v1/auth/signup', {
        body: { email, password, name: 'Test User' },
      });
      const key = await api<{ key: string }>(baseUrl, 'POST', '/v1/api-keys', {
        jwt: signup.token,
        body: { name: 'e2e' },
      });
      return { email, password, jwt: signup.token, teamId: signup.team_id, apiKey: key.key };
    };

    const platform: Platform = {
      baseUrl,
      apiKey: bootResult.api_key,
      adminJwt,
      adminEmail,
      adminPassword,
      teamId: bootResult.team_id,
      agents,
      pg: pool,
      databaseUrl: dbUrl.toString(),
      newTeam,
      addAgent,
      cpLogs: () => cpLog + ((cp as Child | null)?.out ?? ''),
      async restartControlPlane(env?: Record<string, string>, opts?: { crash?: boolean }) {
        await stopCp(opts?.crash ? 'SIGKILL' : 'SIGTERM');
        Object.assign(cpEnv, env);
        await startCp();
        // A new JWT_SECRET invalidates the admin's session.
        platform.adminJwt = adminJwt = await login();
      },
      stop: cleanup,
    };
    return platform;
  } catch (err) {
    await cleanup();
    throw err;
  }
}
