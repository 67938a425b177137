// Small HTTP/WebSocket clients for the capsule end-to-end tests.
import WebSocket from 'ws';

export interface Resp {
  status: number;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  headers: Headers;
}

export type Auth = { apiKey?: string; jwt?: string };

export function api(baseUrl: string, auth: Auth) {
  return async (method: string, url: string, body?: unknown, extra: Auth | null = null): Promise<Resp> => {
    const a = extra ?? auth;
    const res = await fetch(baseUrl + url, {
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(a.apiKey ? { 'x-api-key': a.apiKey } : {}),
        ...(a.jwt ? { authorization: `Bearer ${a.jwt}` } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON: keep the text
    }
    return { status: res.status, body: parsed, headers: res.headers };
  };
}

/** A WebSocket whose messages (JSON) can be awaited in order. */
export class WsClient {
  readonly messages: any[] = []; // eslint-disable-line @typescript-eslint/no-explicit-any
  private waiters: (() => void)[] = [];
  closed: { code: number; reason: string } | null = null;
  readonly opened: Promise<void>;

  constructor(
    url: string,
    headers: Record<string, string> = {},
    readonly ws = new WebSocket(url, { headers }),
  ) {
    this.opened = new Promise((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
    ws.on('message', (d) => {
      this.messages.push(JSON.parse(String(d)));
      this.wake();
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: String(reason) };
      this.wake();
    });
    ws.on('error', () => {});
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  send(obj: object): void {
    this.ws.send(JSON.stringify(obj));
  }

  /** Waits until a message matches (searching from the start), or fails after `ms`. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async waitFor(pred: (m: any) => boolean, ms = 20_000): Promise<any> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.messages.find(pred);
      if (found) return found;
      if (this.closed)
        throw new Error(`closed (${this.closed.code} ${this.closed.reason}): ${JSON.stringify(this.messages)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; got ${JSON.stringify(this.messages).slice(0, 2000)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  async waitClosed(ms = 20_000): Promise<{ code: number; reason: string }> {
    const deadline = Date.now() + ms;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('socket did not close');
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.closed;
  }

  close(): void {
    this.ws.close();
  }
}

export function wsUrl(baseUrl: string, path: string): string {
  return baseUrl.replace(/^http/, 'ws') + path;
}

/** Text of all `output` (base64) PTY messages so far. */
export function ptyText(c: WsClient): string {
  return c.messages
    .filter((m) => m.type === 'output')
    .map((m) => Buffer.from(m.data as string, 'base64').toString())
    .join('');
}
