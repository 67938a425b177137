// GitHub OAuth (web application flow). Endpoints are configurable so tests can
// point them at a local fake GitHub.
import type { GitHubOAuthConfig } from '../../config.js';
import type { OAuthProfile, OAuthProvider } from './provider.js';

const TIMEOUT_MS = 10_000;

export class GitHubProvider implements OAuthProvider {
  readonly name = 'github';

  constructor(
    private readonly cfg: GitHubOAuthConfig,
    private readonly callbackUrl: string,
  ) {}

  authorizeUrl(state: string): string {
    const url = new URL(this.cfg.authorizeUrl);
    url.searchParams.set('client_id', this.cfg.clientId);
    url.searchParams.set('redirect_uri', this.callbackUrl);
    url.searchParams.set('scope', 'user:email');
    url.searchParams.set('state', state);
    url.searchParams.set('allow_signup', 'true');
    return url.toString();
  }

  async exchange(code: string): Promise<OAuthProfile> {
    const tokenRes = await fetch(this.cfg.tokenUrl, {
      method: 'POST',
      headers: { accept: 'application/json', 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        client_id: this.cfg.clientId,
        client_secret: this.cfg.clientSecret,
        code,
        redirect_uri: this.callbackUrl,
      }),
      signal: AbortSignal.timeout(TIMEOUT_MS),
      redirect: 'error',
    });
    if (!tokenRes.ok) throw new Error(`github token endpoint returned ${tokenRes.status}`);
    const tok = (await tokenRes.json()) as { access_token?: unknown; error?: unknown };
    if (typeof tok.access_token !== 'string' || tok.access_token === '') {
      throw new Error(`github token exchange failed: ${typeof tok.error === 'string' ? tok.error : 'no access_token'}`);
    }
    const accessToken = tok.access_token;

    const user = (await this.api('/user', accessToken)) as {
      id?: unknown;
      login?: unknown;
      name?: unknown;
      email?: unknown;
    };
    if (typeof user.id !== 'number' && typeof user.id !== 'string') throw new Error('github /user has no id');
    const login = typeof user.login === 'string' ? user.login : '';
    const name = typeof user.name === 'string' && user.name.trim() !== '' ? user.name.trim() : login;

    // The profile email may be private or unverified: use the primary verified address.
    const emails = (await this.api('/user/emails', accessToken)) as unknown;
    if (!Array.isArray(emails)) throw new Error('github /user/emails is not a list');
    const primary = emails.find(
      (e: { email?: unknown; primary?: unknown; verified?: unknown }) =>
        e && e.primary === true && e.verified === true && typeof e.email === 'string',
    ) as { email: string } | undefined;
    if (!primary) throw new Error('github account has no verified primary email');

    return { id: String(user.id), email: primary.email, name, login };
  }

  private async api(path: string, accessToken: string): Promise<unknown> {
    const res = await fetch(this.cfg.apiUrl + path, {
      headers: {
        accept: 'application/vnd.github+json',
        authorization: `Bearer ${accessToken}`,
        'user-agent': 'wrenn-control-plane',
      },
      signal: AbortSignal.timeout(TIMEOUT_MS),
      redirect: 'error',
    });
    if (!res.ok) throw new Error(`github ${path} returned ${res.status}`);
    return res.json();
  }
}
