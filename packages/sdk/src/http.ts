// One small client over global fetch and `ws`: auth header, deadlines, and
// every failure turned into a typed WrennError.
import WebSocket from 'ws';
import type { ConnectionConfig } from './config.js';
import { TimeoutError, WrennError, errorFromResponse } from './errors.js';

export interface RequestOpts {
  /** JSON body (sets content-type). */
  json?: unknown;
  /** Raw body (FormData, stream, …); `duplex: 'half'` is set for streams. */
  body?: RequestInit['body'];
  headers?: Record<string, string>;
  query?: Record<string, string | number | boolean | undefined | string[]>;
  /** Overrides the configured request deadline. */
  timeoutMs?: number;
  /** The deadline covers only the response headers, not reading the body (streamed downloads). */
  streamBody?: boolean;
  signal?: AbortSignal;
}

export class ApiClient {
  constructor(readonly config: ConnectionConfig) {}

  url(path: string, query?: RequestOpts['query']): string {
    const u = new URL(this.config.baseUrl + path);
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v === undefined) continue;
      for (const item of Array.isArray(v) ? v : [v]) u.searchParams.append(k, String(item));
    }
    return u.toString();
  }

  /** Sends a request and returns the response if it is 2xx; throws the typed error otherwise. */
  async request(method: string, path: string, opts: RequestOpts = {}): Promise<Response> {
    const timeoutMs = opts.timeoutMs ?? this.config.requestTimeoutMs;
    const ac = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, timeoutMs);
    const onAbort = () => ac.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const headers: Record<string, string> = { 'X-API-Key': this.config.apiKey, ...opts.headers };
    let body = opts.body;
    if (opts.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.json);
    }
    const isStream = body !== undefined && body !== null && typeof body === 'object' && Symbol.asyncIterator in body;
    try {
      const res = await fetch(this.url(path, opts.query), {
        method,
        headers,
        body,
        signal: ac.signal,
        ...(isStream ? { duplex: 'half' } : {}),
      } as RequestInit);
      if (!res.ok) throw errorFromResponse(res.status, await res.text());
      if (opts.streamBody) return res;
      // Buffer now, under the deadline, so callers never wait on a stalled body.
      const buf = await res.arrayBuffer();
      return new Response(res.status === 204 ? null : buf, { status: res.status, headers: res.headers });
    } catch (err) {
      throw this.wrap(err, method, path, timedOut, timeoutMs);
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  async json<T>(method: string, path: string, opts: RequestOpts = {}): Promise<T> {
    const res = await this.request(method, path, opts);
    return (await res.json()) as T;
  }

  private wrap(err: unknown, method: string, path: string, timedOut: boolean, timeoutMs: number): WrennError {
    if (err instanceof WrennError) return err;
    if (timedOut) return new TimeoutError(`${method} ${path} timed out after ${timeoutMs} ms`, 'request_timeout');
    return connectionError(err, this.config.baseUrl);
  }

  /**
   * Opens an authenticated WebSocket. A refused upgrade (404, 409, 401…)
   * rejects with the same typed error a plain request would.
   */
  openSocket(path: string, query?: RequestOpts['query']): Promise<WebSocket> {
    const url = this.url(path, query).replace(/^http/, 'ws');
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, {
        headers: { 'X-API-Key': this.config.apiKey },
        handshakeTimeout: this.config.requestTimeoutMs,
      });
      ws.once('open', () => {
        ws.removeAllListeners('error');
        // Errors after the handshake surface as 'close' to the protocol code.
        ws.on('error', () => {});
        resolve(ws);
      });
      ws.once('unexpected-response', (_req, res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          reject(errorFromResponse(res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8')));
          ws.terminate();
        });
        res.on('error', (e) => reject(connectionError(e, this.config.baseUrl)));
      });
      ws.once('error', (err) => {
        if (/handshake has timed out/i.test(err.message)) {
          reject(new TimeoutError(`WebSocket ${path} handshake timed out`, 'request_timeout'));
        } else {
          reject(connectionError(err, this.config.baseUrl));
        }
      });
    });
  }
}

function connectionError(err: unknown, baseUrl: string): WrennError {
  const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
  const detail = cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err));
  const e = new WrennError(`cannot reach the Wrenn API at ${baseUrl}: ${detail}`, 'connection_failed');
  (e as { cause?: unknown }).cause = err;
  return e;
}

/** Parses one JSON WebSocket frame; a malformed one is ignored (returns null). */
export function parseFrame(data: WebSocket.RawData): Record<string, unknown> | null {
  try {
    const text = Array.isArray(data)
      ? Buffer.concat(data).toString('utf8')
      : Buffer.from(data as Buffer).toString('utf8');
    const v = JSON.parse(text) as unknown;
    return v !== null && typeof v === 'object' ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
