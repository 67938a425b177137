// Where the API is and who we are: options first, then WRENN_API_KEY /
// WRENN_BASE_URL. Nothing is read from files (source `.wrenn/dev.env` into
// your environment yourself: `set -a; . .wrenn/dev.env; set +a`).
import { AuthenticationError, InvalidArgumentError } from './errors.js';

export const DEFAULT_BASE_URL = 'http://localhost:8000';
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;

export interface ConnectionOpts {
  /** Team API key (`wrn_…`); default `WRENN_API_KEY`. */
  apiKey?: string;
  /** API base URL, may include a path prefix (e.g. `https://example.com/api`); default `WRENN_BASE_URL` or http://localhost:8000. */
  baseUrl?: string;
  /** Domain of the capsule port proxy; default the host (and port) of `baseUrl`. */
  domain?: string;
  /** Deadline for one API request (not for a command's run time); default 60 s. */
  requestTimeoutMs?: number;
}

export interface ConnectionConfig {
  apiKey: string;
  /** Without a trailing slash. */
  baseUrl: string;
  domain: string;
  requestTimeoutMs: number;
}

export function resolveConfig(opts: ConnectionOpts = {}, env: NodeJS.ProcessEnv = process.env): ConnectionConfig {
  const apiKey = opts.apiKey ?? env.WRENN_API_KEY;
  if (!apiKey) {
    throw new AuthenticationError('no API key: pass apiKey or set WRENN_API_KEY', 'missing_api_key');
  }
  const raw = opts.baseUrl ?? (env.WRENN_BASE_URL || DEFAULT_BASE_URL);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new InvalidArgumentError(`base URL "${raw}" is not a valid URL`, 'invalid_base_url');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidArgumentError(`base URL "${raw}" must start with http:// or https://`, 'invalid_base_url');
  }
  const timeout = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  if (!Number.isFinite(timeout) || timeout <= 0) {
    throw new InvalidArgumentError('requestTimeoutMs must be a positive number', 'invalid_request');
  }
  const baseUrl = (url.origin + url.pathname).replace(/\/+$/, '');
  return { apiKey, baseUrl, domain: opts.domain ?? domainOf(baseUrl), requestTimeoutMs: timeout };
}

/** The port proxy's domain for a base URL: its host with the port kept (`http://localhost:8000/api` → `localhost:8000`). */
export function domainOf(baseUrl: string): string {
  return new URL(baseUrl).host;
}

/** Host name that the control plane routes to `port` inside the capsule: `{port}-{id}.{domain}`. */
export function capsuleHost(capsuleId: string, port: number, domain: string): string {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InvalidArgumentError(`port ${port} is not between 1 and 65535`, 'invalid_request');
  }
  return `${port}-${capsuleId}.${domain}`;
}
