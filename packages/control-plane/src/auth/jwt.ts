// User session tokens: HS256 JWTs valid for 6 hours. Their claims are hints
// only; every request re-loads the user and checks permissions in the database.
import { webcrypto } from 'node:crypto';
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import { formatId, tryParseId } from '@wrenn/contracts';
import { unauthorized } from '../errors.js';
import type { TeamRole } from '../db/schema.js';

export const SESSION_TTL_SECONDS = 6 * 60 * 60;

export interface SessionClaims {
  userId: string; // UUID
  teamId: string; // UUID
  role: TeamRole;
  email: string;
  name: string;
  isAdmin: boolean;
}

const ROLES: ReadonlySet<string> = new Set(['owner', 'admin', 'member']);

/** The HS256 key of a secret, imported once: verifying with a CryptoKey costs half of verifying with raw bytes. */
export function hmacKey(secret: string): Promise<webcrypto.CryptoKey> {
  return webcrypto.subtle.importKey('raw', new TextEncoder().encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, [
    'sign',
    'verify',
  ]);
}

export class SessionTokens {
  private readonly key: Promise<webcrypto.CryptoKey>;

  constructor(
    secret: string,
    private readonly ttlSeconds = SESSION_TTL_SECONDS,
  ) {
    this.key = hmacKey(secret);
  }

  async sign(c: SessionClaims): Promise<string> {
    return new SignJWT({
      typ: 'user',
      team_id: formatId('team', c.teamId),
      role: c.role,
      email: c.email,
      name: c.name,
      is_admin: c.isAdmin,
    })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(formatId('user', c.userId))
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + this.ttlSeconds)
      .sign(await this.key);
  }

  /** Verifies signature, algorithm, expiry and claim shapes; any failure is a 401. */
  async verify(token: string): Promise<SessionClaims> {
    let payload;
    try {
      ({ payload } = await jwtVerify(token, await this.key, { algorithms: ['HS256'] }));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw unauthorized('session token has expired', 'token_expired');
      throw unauthorized('invalid session token', 'invalid_token');
    }
    const userId = tryParseId('user', payload.sub);
    const teamId = tryParseId('team', payload.team_id);
    if (
      payload.typ !== 'user' ||
      userId === null ||
      teamId === null ||
      typeof payload.role !== 'string' ||
      !ROLES.has(payload.role)
    ) {
      throw unauthorized('invalid session token', 'invalid_token');
    }
    return {
      userId,
      teamId,
      role: payload.role as TeamRole,
      email: typeof payload.email === 'string' ? payload.email : '',
      name: typeof payload.name === 'string' ? payload.name : '',
      isAdmin: payload.is_admin === true,
    };
  }
}
