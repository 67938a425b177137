// A local stand-in for GitHub's OAuth and REST endpoints (an external provider,
// so faking it is fair): authorize, access_token, /user and /user/emails.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';

export interface FakeGitHubUser {
  id: number;
  login: string;
  name: string | null;
  email: string | null;
  emails: { email: string; primary: boolean; verified: boolean }[];
}

export class FakeGitHub {
  readonly clientId = 'fake-client-id';
  readonly clientSecret = 'fake-client-secret-' + randomBytes(8).toString('hex');
  /** The account that "signs in" at the next authorize request. */
  nextUser: FakeGitHubUser | undefined;
  /** Token exchanges seen, for assertions. */
  readonly exchanges: { client_id: string | null; client_secret: string | null; redirect_uri: string | null }[] = [];
  /** Every code and access token handed out (secrets that must never be logged). */
  readonly issued: string[] = [];
  private readonly codes = new Map<string, FakeGitHubUser>();
  private readonly tokens = new Map<string, FakeGitHubUser>();
  private server: Server | undefined;
  base = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      void this.handle(req).then(
        ({ status, headers, body }) => {
          res.writeHead(status, headers);
          res.end(body);
        },
        () => {
          res.writeHead(500);
          res.end();
        },
      );
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }

  env(): Record<string, string> {
    return {
      OAUTH_GITHUB_CLIENT_ID: this.clientId,
      OAUTH_GITHUB_CLIENT_SECRET: this.clientSecret,
      OAUTH_GITHUB_AUTHORIZE_URL: `${this.base}/login/oauth/authorize`,
      OAUTH_GITHUB_TOKEN_URL: `${this.base}/login/oauth/access_token`,
      OAUTH_GITHUB_API_URL: `${this.base}/api`,
    };
  }

  config() {
    return {
      clientId: this.clientId,
      clientSecret: this.clientSecret,
      authorizeUrl: `${this.base}/login/oauth/authorize`,
      tokenUrl: `${this.base}/login/oauth/access_token`,
      apiUrl: `${this.base}/api`,
    };
  }

  private async handle(
    req: IncomingMessage,
  ): Promise<{ status: number; headers: Record<string, string>; body: string }> {
    const url = new URL(req.url!, this.base);
    const json = (status: number, value: unknown) => ({
      status,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(value),
    });
    if (req.method === 'GET' && url.pathname === '/login/oauth/authorize') {
      // The user approves at once: back to the app with a code and the same state.
      const redirect = new URL(url.searchParams.get('redirect_uri')!);
      if (url.searchParams.get('client_id') !== this.clientId || !this.nextUser) {
        redirect.searchParams.set('error', 'access_denied');
      } else {
        const code = randomBytes(10).toString('hex');
        this.codes.set(code, this.nextUser);
        this.issued.push(code);
        redirect.searchParams.set('code', code);
      }
      redirect.searchParams.set('state', url.searchParams.get('state') ?? '');
      return { status: 302, headers: { location: redirect.toString() }, body: '' };
    }
    if (req.method === 'POST' && url.pathname === '/login/oauth/access_token') {
      let raw = '';
      for await (const chunk of req) raw += chunk;
      const form = new URLSearchParams(raw);
      this.exchanges.push({
        client_id: form.get('client_id'),
        client_secret: form.get('client_secret'),
        redirect_uri: form.get('redirect_uri'),
      });
      const user = this.codes.get(form.get('code') ?? '');
      if (!user || form.get('client_secret') !== this.clientSecret)
        return json(200, { error: 'bad_verification_code' });
      this.codes.delete(form.get('code')!);
      const token = 'gho_' + randomBytes(12).toString('hex');
      this.tokens.set(token, user);
      this.issued.push(token);
      return json(200, { access_token: token, token_type: 'bearer', scope: 'user:email' });
    }
    const user = this.tokens.get((req.headers.authorization ?? '').replace(/^Bearer /, ''));
    if (req.method === 'GET' && url.pathname === '/api/user') {
      if (!user) return json(401, { message: 'Bad credentials' });
      return json(200, { id: user.id, login: user.login, name: user.name, email: user.email });
    }
    if (req.method === 'GET' && url.pathname === '/api/user/emails') {
      if (!user) return json(401, { message: 'Bad credentials' });
      return json(200, user.emails);
    }
    return json(404, { message: 'Not Found' });
  }
}

let nextId = 1000 + Math.floor(Math.random() * 1e6);

export function githubUser(login: string, email: string, opts: Partial<FakeGitHubUser> = {}): FakeGitHubUser {
  return {
    id: nextId++,
    login,
    name: opts.name === undefined ? login[0]!.toUpperCase() + login.slice(1) : opts.name,
    email: opts.email === undefined ? null : opts.email,
    emails: opts.emails ?? [
      { email: `${login}-old@example.org`, primary: false, verified: true },
      { email, primary: true, verified: true },
    ],
  };
}
