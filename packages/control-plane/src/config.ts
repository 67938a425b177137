// The control plane's configuration, read only from environment variables.
// Every variable is documented in docs/configuration.md (control plane section).
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, found from this compiled file (packages/control-plane/dist/src/config.js). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');

export const VERSION: string = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

export const MIN_JWT_SECRET_LENGTH = 32;
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface GitHubOAuthConfig {
  clientId: string;
  clientSecret: string;
  authorizeUrl: string;
  tokenUrl: string;
  apiUrl: string;
}

export interface Config {
  listenHost: string;
  listenPort: number;
  /** PostgreSQL URL; undefined means the embedded PGlite database in `pgliteDir`. */
  databaseUrl?: string;
  dataDir: string;
  pgliteDir: string;
  /** Redis URL; undefined means no Redis. */
  redisUrl?: string;
  jwtSecret: string;
  jwtSecretSource: 'env' | 'file' | 'generated';
  publicUrl?: string;
  logLevel: LogLevel;
  oauthRedirectUrl?: string;
  github?: GitHubOAuthConfig;
  version: string;
  /** How often the host monitor checks heartbeats and reconciles hosts. */
  hostMonitorIntervalMs: number;
  /** A host without a heartbeat for this long is marked unreachable. */
  hostHeartbeatTimeoutMs: number;
  /** Interactive terminals: how often the server pings, and how long a silent client keeps its connection. */
  pty: PtyTimings;
  /** Template build workers of this control plane (0 = it runs no builds). */
  buildWorkers: number;
  /** A running build whose worker has not renewed its lease for this long is failed by any control plane. */
  buildLeaseMs: number;
}

export interface PtyTimings {
  pingIntervalMs: number;
  idleTimeoutMs: number;
}

/** A configuration mistake: reported as one line on stderr, exit code 1. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

function parseListenAddr(raw: string): { host: string; port: number } {
  // "host:port", ":port" or "[v6]:port".
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(raw);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new ConfigError(`WRENN_CP_LISTEN_ADDR must look like "host:port" (e.g. 0.0.0.0:8000), got "${raw}"`);
  }
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

function parseUrl(name: string, raw: string, protocols: string[]): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`${name} is not a valid URL`);
  }
  if (!protocols.includes(url.protocol)) {
    throw new ConfigError(`${name} must use ${protocols.map((p) => p.replace(/:$/, '://')).join(' or ')}`);
  }
  return raw.replace(/\/+$/, '');
}

/**
 * JWT_SECRET when given (≥32 chars), else the secret persisted in the data directory,
 * else a new random one written there with mode 0600.
 */
export function resolveJwtSecret(
  envValue: string | undefined,
  dataDir: string,
): { secret: string; source: Config['jwtSecretSource'] } {
  if (envValue !== undefined && envValue !== '') {
    if (envValue.length < MIN_JWT_SECRET_LENGTH) {
      throw new ConfigError(`JWT_SECRET must be at least ${MIN_JWT_SECRET_LENGTH} characters long`);
    }
    return { secret: envValue, source: 'env' };
  }
  const file = path.join(dataDir, 'jwt-secret');
  let existing: string | undefined;
  try {
    const st = statSync(file);
    if ((st.mode & 0o077) !== 0) {
      throw new ConfigError(`${file} must not be readable by group or others (chmod 600 it)`);
    }
    existing = readFileSync(file, 'utf8').trim();
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new ConfigError(`cannot read ${file}: ${(err as Error).message}`);
    }
  }
  if (existing !== undefined) {
    if (existing.length < MIN_JWT_SECRET_LENGTH) {
      throw new ConfigError(`${file} holds a secret shorter than ${MIN_JWT_SECRET_LENGTH} characters`);
    }
    return { secret: existing, source: 'file' };
  }
  const secret = randomBytes(48).toString('base64url');
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    // 'wx': never overwrite a secret another control plane wrote a moment ago.
    writeFileSync(file, secret + '\n', { mode: 0o600, flag: 'wx' });
    chmodSync(file, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return resolveJwtSecret(undefined, dataDir);
    throw new ConfigError(`cannot write ${file}: ${(err as Error).message}`);
  }
  return { secret, source: 'generated' };
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const get = (name: string): string | undefined => {
    const v = env[name]?.trim();
    return v === undefined || v === '' ? undefined : v;
  };

  const { host, port } = parseListenAddr(get('WRENN_CP_LISTEN_ADDR') ?? '0.0.0.0:8000');

  const dataDirRaw = get('WRENN_DATA_DIR') ?? get('WRENN_DIR') ?? path.join(REPO_ROOT, '.wrenn', 'data');
  const dataDir = path.resolve(dataDirRaw);

  const dbRaw = get('DATABASE_URL');
  const databaseUrl = dbRaw === undefined ? undefined : parseUrl('DATABASE_URL', dbRaw, ['postgres:', 'postgresql:']);
  const redisRaw = get('REDIS_URL');
  const redisUrl = redisRaw === undefined ? undefined : parseUrl('REDIS_URL', redisRaw, ['redis:', 'rediss:']);

  const logLevel = (get('LOG_LEVEL') ?? 'info').toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  }

  const publicRaw = get('WRENN_PUBLIC_URL');
  const publicUrl = publicRaw === undefined ? undefined : parseUrl('WRENN_PUBLIC_URL', publicRaw, ['http:', 'https:']);
  const redirectRaw = get('OAUTH_REDIRECT_URL');
  const oauthRedirectUrl =
    redirectRaw === undefined ? publicUrl : parseUrl('OAUTH_REDIRECT_URL', redirectRaw, ['http:', 'https:']);

  const clientId = get('OAUTH_GITHUB_CLIENT_ID');
  const clientSecret = get('OAUTH_GITHUB_CLIENT_SECRET');
  let github: GitHubOAuthConfig | undefined;
  if ((clientId === undefined) !== (clientSecret === undefined)) {
    throw new ConfigError('OAUTH_GITHUB_CLIENT_ID and OAUTH_GITHUB_CLIENT_SECRET must be set together');
  }
  if (clientId !== undefined && clientSecret !== undefined) {
    if (publicUrl === undefined) {
      throw new ConfigError('GitHub OAuth needs WRENN_PUBLIC_URL (its callback URL is built from it)');
    }
    const http = ['http:', 'https:'];
    github = {
      clientId,
      clientSecret,
      authorizeUrl: parseUrl(
        'OAUTH_GITHUB_AUTHORIZE_URL',
        get('OAUTH_GITHUB_AUTHORIZE_URL') ?? 'https://github.com/login/oauth/authorize',
        http,
      ),
      tokenUrl: parseUrl(
        'OAUTH_GITHUB_TOKEN_URL',
        get('OAUTH_GITHUB_TOKEN_URL') ?? 'https://github.com/login/oauth/access_token',
        http,
      ),
      apiUrl: parseUrl('OAUTH_GITHUB_API_URL', get('OAUTH_GITHUB_API_URL') ?? 'https://api.github.com', http),
    };
  }

  const { secret, source } = resolveJwtSecret(env.JWT_SECRET, dataDir);

  const seconds = (name: string, fallback: number, min: number, max: number): number => {
    const raw = get(name);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!/^\d+(\.\d+)?$/.test(raw) || n < min || n > max) {
      throw new ConfigError(`${name} must be a number of seconds between ${min} and ${max}, got "${raw}"`);
    }
    return n;
  };
  const hostMonitorIntervalMs = seconds('WRENN_HOST_MONITOR_INTERVAL_SEC', 5, 0.1, 3600) * 1000;
  const hostHeartbeatTimeoutMs = seconds('WRENN_HOST_HEARTBEAT_TIMEOUT_SEC', 90, 1, 86_400) * 1000;
  const pty = {
    pingIntervalMs: seconds('WRENN_PTY_PING_INTERVAL_SEC', 30, 0.1, 3600) * 1000,
    idleTimeoutMs: seconds('WRENN_PTY_IDLE_TIMEOUT_SEC', 120, 1, 86_400) * 1000,
  };

  const workersRaw = get('WRENN_BUILD_WORKERS');
  if (workersRaw !== undefined && !/^\d{1,2}$/.test(workersRaw)) {
    throw new ConfigError(`WRENN_BUILD_WORKERS must be a whole number from 0 to 99, got "${workersRaw}"`);
  }
  const buildWorkers = workersRaw === undefined ? 2 : Number(workersRaw);

  return {
    listenHost: host,
    listenPort: port,
    databaseUrl,
    dataDir,
    pgliteDir: path.join(dataDir, 'pglite'),
    redisUrl,
    jwtSecret: secret,
    jwtSecretSource: source,
    publicUrl,
    logLevel: logLevel as LogLevel,
    oauthRedirectUrl,
    github,
    version: VERSION,
    hostMonitorIntervalMs,
    hostHeartbeatTimeoutMs,
    pty,
    buildWorkers,
    buildLeaseMs: seconds('WRENN_BUILD_LEASE_SEC', 60, 2, 3600) * 1000,
  };
}
