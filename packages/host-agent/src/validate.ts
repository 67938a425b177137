// Input checks shared by the RPC edge and the sandbox manager (which checks
// again, so no caller can skip them). Each throws InvalidArgument with a
// message naming the field and the accepted range.
import os from 'node:os';
import { PLATFORM_UUID, USER_NAME_RE, isSafeName, tryParseId } from '@wrenn/contracts';
import { invalidArgument } from './errors.js';

export const LIMITS = {
  minMemoryMb: 128,
  minDiskMb: 256,
  /** Upper bound of a capsule's sparse disk image. */
  maxDiskMb: 100 * 1024,
  /** 30 days. */
  maxTimeoutSec: 30 * 24 * 3600,
  maxPathLength: 4096,
  maxEnvVars: 256,
  maxArgs: 4096,
  maxPtyCols: 1000,
  maxPtyRows: 1000,
} as const;

export const DEFAULTS = {
  vcpus: 1,
  memoryMb: 512,
  diskSizeMb: 2048,
  execTimeoutSec: 30,
} as const;

export function hostCpus(): number {
  return os.availableParallelism();
}
export function hostMemoryMb(): number {
  return Math.floor(os.totalmem() / (1024 * 1024));
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]{0,255}$/;

export function checkCapsuleId(id: unknown): string {
  if (typeof id !== 'string' || id === '') throw invalidArgument('sandbox_id is required');
  if (tryParseId('capsule', id) === null) {
    throw invalidArgument('sandbox_id must be a capsule id: "cl-" followed by 25 base36 characters');
  }
  return id;
}

/** A team or template id: a hyphenated UUID, or empty for the all-zero platform id. */
export function checkUuidField(field: string, value: string): string {
  if (value === '') return PLATFORM_UUID;
  if (!UUID_RE.test(value))
    throw invalidArgument(`${field} must be a UUID (or empty for the platform), got "${value}"`);
  return value.toLowerCase();
}

export function checkTemplateName(name: string): string {
  if (name === '') return name;
  if (!isSafeName(name)) {
    throw invalidArgument(
      `template "${name}" is not a valid template name: 1-64 letters, digits, ".", "_" or "-", no ".." or "/"`,
    );
  }
  return name;
}

function checkInt(field: string, value: number, min: number, max: number, unit = ''): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalidArgument(`${field} must be between ${min} and ${max}${unit}, got ${value}`);
  }
  return value;
}

export interface Resources {
  vcpus: number;
  memoryMb: number;
  diskSizeMb: number;
  timeoutSec: number;
}

/** Applies defaults for zero values, then checks ranges against this host. */
export function checkResources(r: Resources): Resources {
  const vcpus = r.vcpus === 0 ? DEFAULTS.vcpus : r.vcpus;
  const memoryMb = r.memoryMb === 0 ? DEFAULTS.memoryMb : r.memoryMb;
  const diskSizeMb = r.diskSizeMb === 0 ? DEFAULTS.diskSizeMb : r.diskSizeMb;
  return {
    vcpus: checkInt('vcpus', vcpus, 1, hostCpus(), ' (CPU cores of this host)'),
    memoryMb: checkInt('memory_mb', memoryMb, LIMITS.minMemoryMb, hostMemoryMb(), ' MiB (memory of this host)'),
    diskSizeMb: checkInt('disk_size_mb', diskSizeMb, LIMITS.minDiskMb, LIMITS.maxDiskMb, ' MiB'),
    timeoutSec: checkTimeout(r.timeoutSec),
  };
}

export function checkTimeout(timeoutSec: number, field = 'timeout_sec'): number {
  return checkInt(field, timeoutSec, 0, LIMITS.maxTimeoutSec, ' seconds');
}

export function checkPath(path: unknown, field = 'path'): string {
  if (typeof path !== 'string' || path === '') throw invalidArgument(`${field} is required`);
  if (path.length > LIMITS.maxPathLength)
    throw invalidArgument(`${field} is longer than ${LIMITS.maxPathLength} characters`);
  if (path.includes('\0')) throw invalidArgument(`${field} must not contain NUL bytes`);
  return path;
}

/** Optional user name inside the capsule ('' = envd's default user). */
export function checkUser(user: string, field = 'user'): string {
  if (user !== '' && !USER_NAME_RE.test(user)) throw invalidArgument(`${field} "${user}" is not a valid user name`);
  return user;
}

export function checkEnv(env: Record<string, string>, field = 'envs'): Record<string, string> {
  const keys = Object.keys(env);
  if (keys.length > LIMITS.maxEnvVars) throw invalidArgument(`${field} has more than ${LIMITS.maxEnvVars} variables`);
  for (const k of keys) {
    if (!ENV_KEY_RE.test(k)) throw invalidArgument(`${field} has an invalid variable name "${k}"`);
    if (env[k]!.includes('\0')) throw invalidArgument(`${field}.${k} must not contain NUL bytes`);
  }
  return env;
}

export function checkCommand(cmd: string, args: string[]): void {
  if (cmd === '') throw invalidArgument('cmd is required');
  if (cmd.includes('\0') || args.some((a) => a.includes('\0')))
    throw invalidArgument('cmd and args must not contain NUL bytes');
  if (args.length > LIMITS.maxArgs) throw invalidArgument(`args has more than ${LIMITS.maxArgs} entries`);
}

/** Process and PTY tags: safe names, so they can be logged and matched without surprises. */
export function checkTag(tag: string, field = 'tag'): string {
  if (!isSafeName(tag)) throw invalidArgument(`${field} "${tag}" must be 1-64 letters, digits, ".", "_" or "-"`);
  return tag;
}

export function checkPtySize(cols: number, rows: number): void {
  checkInt('cols', cols, 1, LIMITS.maxPtyCols);
  checkInt('rows', rows, 1, LIMITS.maxPtyRows);
}
