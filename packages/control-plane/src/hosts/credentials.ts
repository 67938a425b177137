// Host credentials: one-time registration tokens (1 hour), host JWTs (7 days,
// sent as X-Host-Token) and rotating refresh tokens (60 days). Opaque tokens
// are 32 random bytes in hex; only their SHA-256 is stored.
import { createHash, randomBytes, type webcrypto } from 'node:crypto';
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import { formatId, tryParseId } from '@wrenn/contracts';
import { unauthorized } from '../errors.js';
import { hmacKey } from '../auth/jwt.js';

export const REGISTRATION_TOKEN_TTL_MS = 60 * 60 * 1000;
export const HOST_JWT_TTL_SECONDS = 7 * 24 * 60 * 60;
export const REFRESH_TOKEN_TTL_MS = 60 * 24 * 60 * 60 * 1000;

export function newOpaqueToken(): { token: string; hash: string } {
  const token = randomBytes(32).toString('hex');
  return { token, hash: hashToken(token) };
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export class HostTokens {
  private readonly key: Promise<webcrypto.CryptoKey>;

  constructor(
    secret: string,
    private readonly ttlSeconds = HOST_JWT_TTL_SECONDS,
  ) {
    this.key = hmacKey(secret);
  }

  async sign(hostId: string): Promise<string> {
    return new SignJWT({ typ: 'host' })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(formatId('host', hostId))
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + this.ttlSeconds)
      .sign(await this.key);
  }

  /** The host's UUID; any failure (signature, expiry, a user token) is a 401. */
  async verify(token: string): Promise<string> {
    let payload;
    try {
      ({ payload } = await jwtVerify(token, await this.key, { algorithms: ['HS256'] }));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw unauthorized('host token has expired', 'token_expired');
      throw unauthorized('invalid host token', 'invalid_token');
    }
    const hostId = tryParseId('host', payload.sub);
    if (payload.typ !== 'host' || hostId === null) throw unauthorized('invalid host token', 'invalid_token');
    return hostId;
  }
}
