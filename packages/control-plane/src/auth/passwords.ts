// Password hashing with Node's scrypt: a per-user random salt and the cost
// parameters stored in the hash, so they can be raised later without breaking old hashes.
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

export const PASSWORD_MIN = 8;
export const PASSWORD_MAX = 128;

const DEFAULT_PARAMS = { N: 16384, r: 8, p: 1 };
const KEY_LEN = 32;
const SALT_LEN = 16;

function scryptAsync(password: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFKC'), salt, keylen, opts, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function maxmem(N: number, r: number): number {
  return 128 * N * r * 2;
}

/** `scrypt$N$r$p$<salt b64>$<hash b64>` */
export async function hashPassword(password: string): Promise<string> {
  const { N, r, p } = DEFAULT_PARAMS;
  const salt = randomBytes(SALT_LEN);
  const key = await scryptAsync(password, salt, KEY_LEN, { N, r, p, maxmem: maxmem(N, r) });
  return ['scrypt', N, r, p, salt.toString('base64'), key.toString('base64')].join('$');
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  // Bounds guard against a corrupted row asking for absurd work.
  if (!(N >= 2 && N <= 1 << 20 && (N & (N - 1)) === 0 && r >= 1 && r <= 32 && p >= 1 && p <= 16)) return false;
  const salt = Buffer.from(parts[4]!, 'base64');
  const expected = Buffer.from(parts[5]!, 'base64');
  if (salt.length === 0 || expected.length === 0) return false;
  const actual = await scryptAsync(password, salt, expected.length, { N, r, p, maxmem: maxmem(N, r) });
  return timingSafeEqual(actual, expected);
}

let dummyHash: Promise<string> | undefined;

/** Spends the same time as a real check, for unknown accounts, so timing does not reveal which emails exist. */
export async function dummyPasswordCheck(password: string): Promise<void> {
  dummyHash ??= hashPassword(randomBytes(16).toString('hex'));
  await verifyPassword(password, await dummyHash);
}

// A short list of the most common passwords and keyboard walks (lowercase).
const COMMON = new Set([
  '12345678',
  '123456789',
  '1234567890',
  '87654321',
  'qwertyui',
  'qwertyuiop',
  'asdfghjk',
  'asdfghjkl',
  'zxcvbnm1',
  '1q2w3e4r',
  '1qaz2wsx',
  'qazwsxedc',
  'iloveyou',
  'sunshine',
  'princess',
  'football',
  'baseball',
  'welcome1',
  'welcome123',
  'letmein1',
  'trustno1',
  'superman',
  'starwars',
  'whatever',
  'changeme',
  'abcd1234',
  'abc12345',
  'qwerty123',
  'admin123',
  'administrator',
  'monkey123',
  'dragon123',
  'master123',
  'wrennwrenn',
]);

function isSequence(s: string): boolean {
  if (s.length < 3) return false;
  const step = s.charCodeAt(1) - s.charCodeAt(0);
  if (Math.abs(step) !== 1) return false;
  for (let i = 2; i < s.length; i++) if (s.charCodeAt(i) - s.charCodeAt(i - 1) !== step) return false;
  return true;
}

/** Why a new password is too weak, or null when acceptable. Length is checked by the request schema too. */
export function passwordWeakness(password: string, context: { email?: string; name?: string } = {}): string | null {
  if (password.length < PASSWORD_MIN) return `password must be at least ${PASSWORD_MIN} characters`;
  if (password.length > PASSWORD_MAX) return `password must be at most ${PASSWORD_MAX} characters`;
  const lower = password.toLowerCase();
  if (new Set(password).size <= 2) return 'password is too repetitive';
  if (lower.startsWith('password') || lower.startsWith('passw0rd')) return 'password is too common';
  if (COMMON.has(lower)) return 'password is too common';
  if (isSequence(lower)) return 'password is a simple sequence';
  // The same short chunk repeated, e.g. "abcabcabc" or "12121212".
  for (let n = 1; n <= 4; n++) {
    if (password.length % n === 0 && password.slice(0, n).repeat(password.length / n) === password) {
      return 'password is too repetitive';
    }
  }
  if (context.email && lower === context.email.toLowerCase()) return 'password must not be your email address';
  const local = context.email?.split('@')[0]?.toLowerCase();
  if (local && local.length >= 4 && lower === local) return 'password must not be your email address';
  return null;
}
