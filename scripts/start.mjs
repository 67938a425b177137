// `npm start`: the whole platform on this machine — control plane (embedded
// database unless DATABASE_URL is set), one host agent registered to it, and the
// dashboard placeholder. Prints where to go and writes .wrenn/dev.env (0600).
// Ctrl-C stops everything.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, chmodSync, renameSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// WRENN_DEV_ENV moves the file (tests run a second platform beside a developer's).
const DEV_ENV = path.resolve(process.env.WRENN_DEV_ENV || path.join(ROOT, '.wrenn', 'dev.env'));
const DATA_DIR = path.resolve(process.env.WRENN_DIR || path.join(ROOT, '.wrenn', 'data'));
const CP_MAIN = path.join(ROOT, 'packages/control-plane/dist/src/main.js');
const AGENT_MAIN = path.join(ROOT, 'packages/host-agent/dist/src/main.js');
const CP_PORT = Number(process.env.WRENN_PORT || 8000);
const AGENT_ADDR = process.env.WRENN_HOST_LISTEN_ADDR || '127.0.0.1:50051';
const API_URL = process.env.WRENN_PUBLIC_URL || `http://localhost:${CP_PORT}`;

const say = (line) => console.error(`\x1b[1m[wrenn]\x1b[0m ${line}`);

function readDevEnv() {
  if (!existsSync(DEV_ENV)) return {};
  const out = {};
  for (const line of readFileSync(DEV_ENV, 'utf8').split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]] = m[2];
  }
  return out;
}

function writeDevEnv(values) {
  mkdirSync(path.dirname(DEV_ENV), { recursive: true });
  const tmp = `${DEV_ENV}.tmp`;
  const body = Object.entries(values)
    .map(([k, v]) => `${k}=${v}`)
    .join('\n');
  writeFileSync(tmp, body + '\n', { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, DEV_ENV);
}

const children = new Map();
let stopping = false;

function run(name, args, env) {
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'inherit', 'inherit'],
    // Warnings and errors only, so the summary below stays readable; LOG_LEVEL=info shows every request.
    env: { LOG_LEVEL: 'warn', ...process.env, ...env },
  });
  children.set(name, child);
  child.on('exit', (code, signal) => {
    children.delete(name);
    if (!stopping) {
      say(`${name} exited (${signal ?? `code ${code}`}); stopping`);
      void stop(1);
    }
  });
  return child;
}

function exited(child) {
  return new Promise((resolve) =>
    child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', resolve),
  );
}

async function stop(code = 0) {
  if (stopping) return;
  stopping = true;
  say('stopping');
  // The agent first, then the control plane.
  for (const name of ['host agent', 'control plane']) {
    const child = children.get(name);
    if (!child) continue;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    await exited(child);
    clearTimeout(timer);
  }
  process.exit(code);
}
process.on('SIGINT', () => void stop(0));
process.on('SIGTERM', () => void stop(0));

async function api(method, url, { token, body } = {}) {
  const res = await fetch(API_URL + url, {
    method,
    headers: {
      ...(body ? { 'content-type': 'application/json' } : {}),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : undefined;
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${json?.error?.message ?? text}`);
  return json;
}

async function waitFor(what, fn, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const CREDENTIALS = path.join(DATA_DIR, 'host-credentials.json');

/**
 * Registers this machine's host agent the first time (POST /v1/hosts, then
 * `--register <token> --address <addr>`); later starts reuse its saved
 * credentials unless the control plane no longer knows the host.
 */
async function agentArgs(token) {
  if (existsSync(CREDENTIALS)) {
    const { host_id: hostId } = JSON.parse(readFileSync(CREDENTIALS, 'utf8'));
    const res = await fetch(`${API_URL}/v1/hosts/${hostId}`, { headers: { authorization: `Bearer ${token}` } });
    if (res.ok) return { args: [], hostId };
    say('the saved host is unknown to the control plane; registering again');
    rmSync(CREDENTIALS, { force: true });
  }
  const { host, registration_token } = await api('POST', '/v1/hosts', {
    token,
    body: { type: 'regular', provider: 'local' },
  });
  return { args: ['--register', registration_token, '--address', AGENT_ADDR], hostId: host.id };
}

async function main() {
  const env = readDevEnv();
  const adminEmail = env.WRENN_ADMIN_EMAIL || 'admin@wrenn.local';
  const adminPassword = env.WRENN_ADMIN_PASSWORD || randomBytes(18).toString('base64url');

  // The first admin, before the server opens the (possibly embedded, single-process) database.
  const boot = spawn(process.execPath, [CP_MAIN, 'bootstrap-admin', '--email', adminEmail, '--name', 'Admin'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, WRENN_DATA_DIR: DATA_DIR, WRENN_ADMIN_PASSWORD: adminPassword, LOG_LEVEL: 'warn' },
  });
  let bootOut = '';
  boot.stdout.on('data', (d) => (bootOut += d));
  const bootCode = await new Promise((r) => boot.on('exit', r));
  if (bootCode !== 0) throw new Error('could not create the first admin (see above)');
  const bootResult = JSON.parse(bootOut.trim().split('\n').pop());
  if (!bootResult.created && !env.WRENN_ADMIN_PASSWORD) {
    throw new Error(
      `${DATA_DIR} already has users but ${DEV_ENV} is gone, so the admin password is unknown; ` +
        'restore that file, or remove the data directory to start afresh',
    );
  }

  // Saved at once, so a run that fails later still knows the admin's password next time.
  writeDevEnv({
    ...env,
    WRENN_BASE_URL: API_URL,
    ...(bootResult.api_key ? { WRENN_API_KEY: bootResult.api_key } : {}),
    WRENN_ADMIN_EMAIL: adminEmail,
    WRENN_ADMIN_PASSWORD: adminPassword,
  });

  run('control plane', [CP_MAIN], {
    WRENN_DATA_DIR: DATA_DIR,
    WRENN_CP_LISTEN_ADDR: process.env.WRENN_CP_LISTEN_ADDR || `0.0.0.0:${CP_PORT}`,
    WRENN_PUBLIC_URL: API_URL,
  });
  await waitFor('the control plane', async () => (await fetch(`${API_URL}/health`)).ok);

  const { token } = await api('POST', '/v1/auth/login', { body: { email: adminEmail, password: adminPassword } });
  const apiKey =
    bootResult.api_key ||
    env.WRENN_API_KEY ||
    (await api('POST', '/v1/api-keys', { token, body: { name: 'npm start' } })).key;

  // The host agent, registered with the control plane. On Ctrl-C it destroys its capsules.
  const agent = await agentArgs(token);
  run('host agent', [AGENT_MAIN, ...agent.args], {
    WRENN_DIR: DATA_DIR,
    WRENN_HOST_LISTEN_ADDR: AGENT_ADDR,
    WRENN_CP_URL: `http://127.0.0.1:${CP_PORT}`,
    WRENN_DESTROY_ON_EXIT: 'true',
  });
  await waitFor('the host agent to come online', async () => {
    const h = await api('GET', `/v1/hosts/${agent.hostId}`, { token });
    return h.status === 'online';
  });

  writeDevEnv({
    WRENN_BASE_URL: API_URL,
    WRENN_API_KEY: apiKey,
    WRENN_ADMIN_EMAIL: adminEmail,
    WRENN_ADMIN_PASSWORD: adminPassword,
  });

  console.log(
    [
      '',
      'Wrenn is running.',
      `  API:        ${API_URL}  (reference: ${API_URL}/docs)`,
      `  Dashboard:  ${API_URL}/`,
      `  API key:    ${apiKey}`,
      `  Admin:      ${adminEmail} (password in .wrenn/dev.env)`,
      `  Host agent: ${AGENT_ADDR} (${agent.hostId})`,
      '',
      `Try:  curl -s -X POST ${API_URL}/v1/capsules -H "X-API-Key: ${apiKey}"`,
      'Ctrl-C stops everything.',
      '',
    ].join('\n'),
  );
}

main().catch((err) => {
  say(`error: ${err.message}`);
  void stop(1);
});
