// Host agent configuration from the environment. Every variable has a
// documented default (docs/configuration.md, "Host agent"); a bad value is
// reported as one clear line by main.ts, which then exits 1.
import net from 'node:net';
import { defaultDataDir } from './layout.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface AgentConfig {
  /** WRENN_DIR: absolute data directory (templates, capsules, envd bundle, runc state). */
  dataDir: string;
  listenHost: string;
  /** 0 picks a free port (the bound port is logged). */
  listenPort: number;
  /** Prefix naming every host object (netns, veths, iptables chains, cgroups) of this agent. */
  netPrefix: string;
  /** IPv4 CIDR from which capsule addresses are carved. */
  subnet: string;
  /** When set, every RPC must carry `Authorization: Bearer <token>`. */
  agentToken: string | null;
  logLevel: LogLevel;
  /** WRENN_CP_URL: the control plane to register with and heartbeat to (optional for a standalone agent). */
  cpUrl: string | null;
  heartbeatIntervalMs: number;
  /** WRENN_DESTROY_ON_EXIT: SIGTERM/SIGINT destroy every capsule first (single-machine `npm start`). */
  destroyOnExit: boolean;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const NET_PREFIX_RE = /^[a-z][a-z0-9]{0,3}$/;
export const MIN_TOKEN_LENGTH = 16;

/** Parses `host:port`, `[v6]:port` or `:port` (all interfaces). */
export function parseListenAddr(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  if (!m) throw new ConfigError(`WRENN_HOST_LISTEN_ADDR must be host:port, got "${value}"`);
  const host = m[1] ?? (m[2] || '0.0.0.0');
  const port = Number(m[3]);
  if (port > 65535) throw new ConfigError(`WRENN_HOST_LISTEN_ADDR port must be 0..65535, got ${port}`);
  if (m[1] !== undefined && net.isIPv6(host) === false) {
    throw new ConfigError(`WRENN_HOST_LISTEN_ADDR has an invalid IPv6 address "${host}"`);
  }
  if (m[1] === undefined && !net.isIPv4(host) && !/^[A-Za-z0-9.-]{1,253}$/.test(host)) {
    throw new ConfigError(`WRENN_HOST_LISTEN_ADDR has an invalid host "${host}"`);
  }
  return { host, port };
}

/** Checks an IPv4 CIDR with room for at least a few capsules (/8../28) and returns it normalised. */
export function parseSubnet(value: string): string {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(value);
  if (!m || !net.isIPv4(m[1]!))
    throw new ConfigError(`WRENN_SUBNET must be an IPv4 CIDR like 10.20.0.0/16, got "${value}"`);
  const bits = Number(m[2]);
  if (bits < 8 || bits > 28) throw new ConfigError(`WRENN_SUBNET prefix length must be 8..28, got /${bits}`);
  const addr = m[1]!.split('.').reduce((acc, o) => (acc << 8) + Number(o), 0) >>> 0;
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  if ((addr & ~mask) >>> 0 !== 0) {
    throw new ConfigError(`WRENN_SUBNET "${value}" has host bits set; use its network address`);
  }
  return value;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): AgentConfig {
  let dataDir: string;
  try {
    dataDir = defaultDataDir(env);
  } catch (err) {
    throw new ConfigError(`WRENN_DIR: ${(err as Error).message}`);
  }
  const { host, port } = parseListenAddr(env.WRENN_HOST_LISTEN_ADDR || '0.0.0.0:50051');

  const netPrefix = env.WRENN_NET_PREFIX || 'wr';
  if (!NET_PREFIX_RE.test(netPrefix)) {
    throw new ConfigError(
      `WRENN_NET_PREFIX must be 1-4 lowercase letters or digits starting with a letter, got "${netPrefix}"`,
    );
  }

  const subnet = parseSubnet(env.WRENN_SUBNET || '10.20.0.0/16');

  let agentToken: string | null = null;
  if (env.WRENN_AGENT_TOKEN !== undefined && env.WRENN_AGENT_TOKEN !== '') {
    agentToken = env.WRENN_AGENT_TOKEN;
    if (agentToken.length < MIN_TOKEN_LENGTH || /\s/.test(agentToken)) {
      throw new ConfigError(
        `WRENN_AGENT_TOKEN must be at least ${MIN_TOKEN_LENGTH} characters without whitespace (got ${agentToken.length})`,
      );
    }
  }

  const logLevel = (env.LOG_LEVEL || 'info').toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got "${env.LOG_LEVEL}"`);
  }

  let cpUrl: string | null = null;
  if (env.WRENN_CP_URL) {
    let url: URL | null = null;
    try {
      url = new URL(env.WRENN_CP_URL);
    } catch {
      // reported below
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      throw new ConfigError(`WRENN_CP_URL must be an http(s) URL, got "${env.WRENN_CP_URL}"`);
    }
    cpUrl = env.WRENN_CP_URL.replace(/\/+$/, '');
  }
  const hbRaw = env.WRENN_HEARTBEAT_INTERVAL_SEC || '30';
  const hb = Number(hbRaw);
  if (!/^\d+(\.\d+)?$/.test(hbRaw) || hb < 0.1 || hb > 3600) {
    throw new ConfigError(
      `WRENN_HEARTBEAT_INTERVAL_SEC must be a number of seconds between 0.1 and 3600, got "${hbRaw}"`,
    );
  }

  const destroyRaw = (env.WRENN_DESTROY_ON_EXIT || 'false').toLowerCase();
  if (!['1', '0', 'true', 'false'].includes(destroyRaw)) {
    throw new ConfigError(`WRENN_DESTROY_ON_EXIT must be true or false, got "${env.WRENN_DESTROY_ON_EXIT}"`);
  }

  return {
    dataDir,
    cpUrl,
    destroyOnExit: destroyRaw === '1' || destroyRaw === 'true',
    heartbeatIntervalMs: hb * 1000,
    listenHost: host,
    listenPort: port,
    netPrefix,
    subnet,
    agentToken,
    logLevel: logLevel as LogLevel,
  };
}
