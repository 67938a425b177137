// Argument parsing for the CLI: numbers, durations, sizes, KEY=VALUE pairs
// and `<capsule-id>:/path` copy operands. Each throws a message fit for
// `wrenn: …`.
import { InvalidArgumentError } from 'commander';

export function parsePositiveInt(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError('must be a positive integer.');
  }
  return Number(value);
}

const DURATION_UNITS: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600 };

/** `300`, `300s`, `5m`, `1h` → seconds (0 allowed: no timeout). */
export function parseDuration(value: string): number {
  const m = /^(\d+)(s|m|h)?$/.exec(value.trim());
  const mult = m ? DURATION_UNITS[m[2] ?? ''] : undefined;
  if (!m || mult === undefined) throw new InvalidArgumentError('must be a duration like 300, 90s, 5m or 1h.');
  const sec = Number(m[1]) * mult;
  if (!Number.isSafeInteger(sec)) throw new InvalidArgumentError('is too large.');
  return sec;
}

/** `512`, `512M`, `512MiB`, `2G`, `2GiB` → MiB. */
export function parseSizeMb(value: string): number {
  const m = /^(\d+)\s*(m|mb|mi|mib|g|gb|gi|gib)?$/i.exec(value.trim());
  if (!m) throw new InvalidArgumentError('must be a size in MiB, or with a unit like 512M or 2G.');
  const n = Number(m[1]) * (m[2] && m[2].toLowerCase().startsWith('g') ? 1024 : 1);
  if (n < 1 || !Number.isSafeInteger(n)) throw new InvalidArgumentError('must be at least 1 MiB.');
  return n;
}

/** Collects repeated `KEY=VALUE` options into a record. */
export function collectKeyValue(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const i = value.indexOf('=');
  if (i <= 0) throw new InvalidArgumentError(`"${value}" is not KEY=VALUE.`);
  return { ...previous, [value.slice(0, i)]: value.slice(i + 1) };
}

export type CopyEnd = { kind: 'capsule'; capsuleId: string; path: string } | { kind: 'local'; path: string };

const REMOTE_RE = /^(cl-[0-9a-z]+):(.*)$/;

/** `cl-…:/path` is a path in a capsule; anything else (including `-`) is local. */
export function parseCopyEnd(spec: string): CopyEnd {
  const m = REMOTE_RE.exec(spec);
  if (!m) return { kind: 'local', path: spec };
  const p = m[2] ?? '';
  if (!p.startsWith('/')) throw new Error(`"${spec}": the path in the capsule must be absolute (${m[1]}:/path)`);
  return { kind: 'capsule', capsuleId: m[1] as string, path: p };
}

/** Exactly one side of `files cp` is in a capsule. */
export function parseCopy(
  src: string,
  dst: string,
): { direction: 'upload' | 'download'; local: string; capsuleId: string; remote: string } {
  const a = parseCopyEnd(src);
  const b = parseCopyEnd(dst);
  if (a.kind === 'local' && b.kind === 'capsule') {
    return { direction: 'upload', local: a.path, capsuleId: b.capsuleId, remote: b.path };
  }
  if (a.kind === 'capsule' && b.kind === 'local') {
    return { direction: 'download', local: b.path, capsuleId: a.capsuleId, remote: a.path };
  }
  throw new Error(
    a.kind === 'local'
      ? 'one side of cp must be in a capsule, written <capsule-id>:/path'
      : 'copying between two capsules is not supported; one side must be a local path',
  );
}

/** The command of `exec`: one word is a shell command line, several are a program and its arguments. */
export function execCommand(words: string[]): { cmd: string; args?: string[] } {
  const [first, ...rest] = words;
  if (first === undefined || first === '') throw new Error('no command given: wrenn exec <id> -- <command> [args…]');
  return words.length === 1 ? { cmd: first } : { cmd: first, args: rest };
}
