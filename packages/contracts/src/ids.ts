// Wire IDs: a prefix plus the 16 UUID bytes as a 25-character lowercase base36
// number (big-endian, left-padded). The database keeps plain UUIDs.
import { randomUUID } from 'node:crypto';

export const ID_PREFIXES = {
  capsule: 'cl-',
  user: 'usr-',
  team: 'team-',
  apiKey: 'key-',
  host: 'host-',
  hostToken: 'htok-',
  refreshToken: 'hrt-',
  auditLog: 'log-',
  build: 'bld-',
  channel: 'ch-',
  template: 'tpl-',
  permission: 'perm-',
} as const;

export type IdKind = keyof typeof ID_PREFIXES;

const B36_LEN = 25;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const B36_RE = /^[0-9a-z]{25}$/;
const MAX_UUID = (1n << 128n) - 1n;

/** The all-zero UUID: the platform team and the built-in `minimal` template. */
export const PLATFORM_UUID = '00000000-0000-0000-0000-000000000000';

export class InvalidIdError extends Error {
  constructor(
    readonly kind: IdKind,
    readonly value: string,
  ) {
    super(`invalid ${kind} id: expected "${ID_PREFIXES[kind]}" followed by 25 base36 characters`);
    this.name = 'InvalidIdError';
  }
}

export function newUuid(): string {
  return randomUUID();
}

/** UUID (hyphenated) → base36, 25 chars. */
export function uuidToBase36(uuid: string): string {
  const hex = uuid.toLowerCase();
  if (!UUID_RE.test(hex)) throw new TypeError(`not a UUID: ${uuid}`);
  return BigInt('0x' + hex.replaceAll('-', ''))
    .toString(36)
    .padStart(B36_LEN, '0');
}

/** base36 (25 chars) → UUID, or null when malformed or out of range. */
export function base36ToUuid(b36: string): string | null {
  if (!B36_RE.test(b36)) return null;
  let n = 0n;
  for (const ch of b36) n = n * 36n + BigInt(parseInt(ch, 36));
  if (n > MAX_UUID) return null;
  const hex = n.toString(16).padStart(32, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function formatId(kind: IdKind, uuid: string): string {
  return ID_PREFIXES[kind] + uuidToBase36(uuid);
}

/** Parses a wire id of the given kind; null when it is malformed. */
export function tryParseId(kind: IdKind, wire: unknown): string | null {
  if (typeof wire !== 'string') return null;
  const prefix = ID_PREFIXES[kind];
  if (!wire.startsWith(prefix)) return null;
  return base36ToUuid(wire.slice(prefix.length));
}

/** Parses a wire id of the given kind; throws InvalidIdError when malformed. */
export function parseId(kind: IdKind, wire: string): string {
  const uuid = tryParseId(kind, wire);
  if (uuid === null) throw new InvalidIdError(kind, wire);
  return uuid;
}

export function newId(kind: IdKind): { uuid: string; id: string } {
  const uuid = newUuid();
  return { uuid, id: formatId(kind, uuid) };
}
