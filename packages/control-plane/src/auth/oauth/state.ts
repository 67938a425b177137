// The OAuth CSRF state, carried in an HMAC-signed cookie: `nonce.intent.issuedAt.mac`.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export type OAuthIntent = 'login' | 'signup';
export const STATE_TTL_SECONDS = 600;

export class OAuthStateSigner {
  private readonly key: Buffer;

  constructor(jwtSecret: string) {
    // A key of its own, derived from the JWT secret, so a state MAC is never a valid anything-else MAC.
    this.key = createHmac('sha256', jwtSecret).update('wrenn oauth state v1').digest();
  }

  private mac(data: string): Buffer {
    return createHmac('sha256', this.key).update(data).digest();
  }

  /** A fresh state: `nonce` goes to the provider, `cookie` to the browser. */
  issue(intent: OAuthIntent, now = Date.now()): { nonce: string; cookie: string } {
    const nonce = randomBytes(16).toString('hex');
    const data = `${nonce}.${intent}.${Math.floor(now / 1000)}`;
    return { nonce, cookie: `${data}.${this.mac(data).toString('hex')}` };
  }

  /** The intent when the cookie is authentic, unexpired and matches `state`; else null. */
  verify(cookie: string | undefined, state: string | undefined, now = Date.now()): OAuthIntent | null {
    if (!cookie || !state) return null;
    const parts = cookie.split('.');
    if (parts.length !== 4) return null;
    const [nonce, intent, issued, macHex] = parts as [string, string, string, string];
    if (!/^[0-9a-f]{64}$/.test(macHex)) return null;
    const expected = this.mac(`${nonce}.${intent}.${issued}`);
    if (!timingSafeEqual(expected, Buffer.from(macHex, 'hex'))) return null;
    const age = Math.floor(now / 1000) - Number(issued);
    if (!(age >= 0 && age <= STATE_TTL_SECONDS)) return null;
    const a = Buffer.from(nonce);
    const b = Buffer.from(state);
    if (a.length !== b.length || !timingSafeEqual(a, b)) return null;
    return intent === 'signup' ? 'signup' : intent === 'login' ? 'login' : null;
  }
}
