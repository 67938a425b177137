// capsule.files: read, write (buffered or streamed), list, mkdir, remove, exists, watch.
import { randomBytes } from 'node:crypto';
import path from 'node:path/posix';
import type WebSocket from 'ws';
import { ConflictError, InvalidArgumentError, NotFoundError, WrennError, errorFromClose } from './errors.js';
import { parseFrame, type ApiClient } from './http.js';
import { toEntryInfo, type EntryInfo, type FileEntryWire } from './types.js';

/** What `files.write` accepts: in-memory data, or a stream (Node Readable, web ReadableStream, any async iterable of bytes). */
export type WriteData =
  string | Uint8Array | ArrayBuffer | Blob | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

/** In-memory data larger than this goes through the streamed endpoint too (the buffered one caps uploads at 100 MB). */
const BUFFERED_MAX = 16 * 1024 * 1024;
/** Reading or writing a big file can take long; the deadline is for a stalled connection, not for the transfer. */
const TRANSFER_TIMEOUT_MS = 60 * 60 * 1000;

export class Files {
  constructor(
    private readonly api: ApiClient,
    private readonly capsuleId: string,
  ) {}

  private path(rest: string): string {
    return `/v1/capsules/${encodeURIComponent(this.capsuleId)}/files${rest}`;
  }

  /** Reads a file: as text (default), bytes, or a stream of chunks (for large files). */
  read(filePath: string, opts?: { format?: 'text' }): Promise<string>;
  read(filePath: string, opts: { format: 'bytes' }): Promise<Uint8Array>;
  read(filePath: string, opts: { format: 'stream' }): Promise<ReadableStream<Uint8Array>>;
  async read(
    filePath: string,
    opts: { format?: 'text' | 'bytes' | 'stream' } = {},
  ): Promise<string | Uint8Array | ReadableStream<Uint8Array>> {
    checkPath(filePath);
    const format = opts.format ?? 'text';
    if (format === 'stream') {
      const res = await this.api.request('POST', this.path('/stream/read'), {
        json: { path: filePath },
        streamBody: true,
      });
      return res.body ?? new ReadableStream<Uint8Array>({ start: (c) => c.close() });
    }
    const res = await this.api.request('POST', this.path('/read'), {
      json: { path: filePath },
      timeoutMs: Math.max(this.api.config.requestTimeoutMs, 5 * 60_000),
    });
    const buf = new Uint8Array(await res.arrayBuffer());
    return format === 'bytes' ? buf : Buffer.from(buf).toString('utf8');
  }

  /**
   * Writes a file, creating parent directories. Small in-memory data is sent
   * in one request; streams and large data go through the streamed endpoint,
   * so nothing is held whole in memory on either side.
   */
  async write(filePath: string, data: WriteData): Promise<void> {
    checkPath(filePath);
    if (typeof data === 'string' || data instanceof Uint8Array || data instanceof ArrayBuffer) {
      const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : new Uint8Array(data);
      if (bytes.byteLength <= BUFFERED_MAX) return this.writeBuffered(filePath, new Blob([bytes]));
      return this.writeStreamed(filePath, chunksOf(bytes));
    }
    if (data instanceof Blob) {
      if (data.size <= BUFFERED_MAX) return this.writeBuffered(filePath, data);
      return this.writeStreamed(filePath, data.stream() as unknown as AsyncIterable<Uint8Array>);
    }
    if (isAsyncIterable(data)) return this.writeStreamed(filePath, data);
    if (data && typeof (data as ReadableStream).getReader === 'function') {
      return this.writeStreamed(filePath, readerIterable(data as ReadableStream<Uint8Array>));
    }
    throw new InvalidArgumentError(
      'data must be a string, Uint8Array, ArrayBuffer, Blob or a stream of bytes',
      'invalid_request',
    );
  }

  private async writeBuffered(filePath: string, blob: Blob): Promise<void> {
    const form = new FormData();
    form.append('path', filePath);
    form.append('file', blob, path.basename(filePath) || 'file');
    await this.api.request('POST', this.path('/write'), {
      body: form,
      timeoutMs: Math.max(this.api.config.requestTimeoutMs, 5 * 60_000),
    });
  }

  private async writeStreamed(filePath: string, data: AsyncIterable<Uint8Array>): Promise<void> {
    if (/[\r\n]/.test(filePath)) throw new InvalidArgumentError('path must not contain line breaks', 'invalid_request');
    const boundary = `----wrenn${randomBytes(12).toString('hex')}`;
    await this.api.request('POST', this.path('/stream/write'), {
      body: multipartBody(boundary, filePath, data) as unknown as RequestInit['body'],
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
      timeoutMs: TRANSFER_TIMEOUT_MS,
    });
  }

  /** Lists a directory (`depth` levels down, default 1). */
  async list(dirPath: string, opts: { depth?: number } = {}): Promise<EntryInfo[]> {
    checkPath(dirPath);
    const depth = opts.depth ?? 1;
    if (!Number.isInteger(depth) || depth < 1) {
      throw new InvalidArgumentError(`depth ${depth} must be a positive integer`, 'invalid_request');
    }
    const res = await this.api.json<{ entries: FileEntryWire[] }>('POST', this.path('/list'), {
      json: { path: dirPath, depth },
    });
    return res.entries.map(toEntryInfo);
  }

  /** Creates a directory and its parents; false if it already existed. */
  async makeDir(dirPath: string): Promise<boolean> {
    checkPath(dirPath);
    try {
      await this.api.request('POST', this.path('/mkdir'), { json: { path: dirPath } });
      return true;
    } catch (err) {
      if (err instanceof ConflictError && (await this.isDir(dirPath))) return false;
      throw err;
    }
  }

  /** Removes a file or a directory with everything in it. */
  async remove(filePath: string): Promise<void> {
    checkPath(filePath);
    await this.api.request('POST', this.path('/remove'), { json: { path: filePath } });
  }

  /**
   * Watches a directory: `onEvent` gets every change under it (`name` relative
   * to `dirPath`) until `stop()`. Resolves once the watch is in place, so a
   * change made after that is reported. `onExit` is called once when the
   * watch ends by itself (an error, e.g. the directory was removed, or the
   * capsule went away). Named as in E2B's SDK; `watch` is the same.
   */
  async watchDir(
    dirPath: string,
    onEvent: (event: FilesystemEvent) => void,
    opts: WatchOpts = {},
  ): Promise<WatchHandle> {
    checkPath(dirPath);
    const query: Record<string, string> = { path: dirPath };
    if (opts.recursive) query.recursive = 'true';
    if (opts.user) query.user = opts.user;
    const ws = await this.api.openSocket(this.path('/watch'), query);
    const handle = new WatchHandle(ws, onEvent, opts.onExit);
    await handle.started;
    return handle;
  }

  watch(dirPath: string, onEvent: (event: FilesystemEvent) => void, opts: WatchOpts = {}): Promise<WatchHandle> {
    return this.watchDir(dirPath, onEvent, opts);
  }

  /** Whether a file or directory exists at this path. */
  async exists(filePath: string): Promise<boolean> {
    return (await this.entry(filePath)) !== null;
  }

  private async isDir(dirPath: string): Promise<boolean> {
    return (await this.entry(dirPath))?.type === 'directory';
  }

  /** The entry for a path, from a listing of its parent (the API has no stat). */
  private async entry(filePath: string): Promise<EntryInfo | null> {
    checkPath(filePath);
    const normal = path.resolve('/', filePath);
    if (normal === '/') return { ...ROOT_ENTRY, modifiedTime: new Date(0) };
    try {
      const entries = await this.list(path.dirname(normal));
      return entries.find((e) => e.name === path.basename(normal)) ?? null;
    } catch (err) {
      // A missing parent, or a parent that is a file.
      if (err instanceof NotFoundError && err.code !== 'capsule_not_found') return null;
      if (err instanceof InvalidArgumentError) return null;
      throw err;
    }
  }
}

export type FilesystemEventType = 'create' | 'write' | 'remove' | 'rename' | 'chmod';

export interface FilesystemEvent {
  /** Path of what changed, relative to the watched directory. */
  name: string;
  type: FilesystemEventType;
}

export interface WatchOpts {
  /** Subdirectories too (default: only the directory itself). */
  recursive?: boolean;
  /** Watch as this capsule user (the directory must be readable by them). */
  user?: string;
  /** Called once if the watch ends by itself: with the error, or nothing when the server closed it normally. */
  onExit?: (err?: WrennError) => void;
}

/** A directory watch; `stop()` ends it. */
export class WatchHandle {
  /** Resolves when the watch is in place; rejects with the reason it could not be made. */
  readonly started: Promise<void>;
  private stopped = false;

  constructor(
    private readonly ws: WebSocket,
    onEvent: (event: FilesystemEvent) => void,
    onExit: ((err?: WrennError) => void) | undefined,
  ) {
    let ok!: () => void;
    let fail!: (e: Error) => void;
    this.started = new Promise((res, rej) => ((ok = res), (fail = rej)));
    this.started.catch(() => {});
    let isStarted = false;
    let lastError: string | undefined;
    ws.on('message', (raw) => {
      const m = parseFrame(raw);
      if (!m) return;
      if (m.type === 'started') {
        isStarted = true;
        ok();
      } else if (m.type === 'event') onEvent({ name: String(m.name), type: m.op as FilesystemEventType });
      else if (m.type === 'error') lastError = String(m.data ?? 'watch failed');
      else if (m.type === 'ping' && ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'pong' }));
    });
    ws.on('close', (code, reason) => {
      if (this.stopped) return;
      const err = code === 1000 && !lastError ? undefined : errorFromClose(code, reason.toString(), lastError);
      if (!isStarted) fail(err ?? new WrennError('the watch ended before it started', 'watch_closed'));
      else onExit?.(err);
    });
  }

  /** Stops watching. */
  stop(): void {
    this.stopped = true;
    this.ws.close();
  }
}

const ROOT_ENTRY = {
  name: '/',
  path: '/',
  type: 'directory',
  size: 0,
  mode: 0o755,
  permissions: 'drwxr-xr-x',
  owner: 'root',
  group: 'root',
} as const;

function checkPath(p: string): void {
  if (typeof p !== 'string' || p === '')
    throw new InvalidArgumentError('path must be a non-empty string', 'invalid_request');
}

function isAsyncIterable(v: unknown): v is AsyncIterable<Uint8Array> {
  return v !== null && typeof v === 'object' && Symbol.asyncIterator in v;
}

async function* readerIterable(stream: ReadableStream<Uint8Array>): AsyncIterable<Uint8Array> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

async function* chunksOf(bytes: Uint8Array, size = 1024 * 1024): AsyncIterable<Uint8Array> {
  for (let off = 0; off < bytes.byteLength; off += size) yield bytes.subarray(off, off + size);
}

/** A multipart/form-data body with the `path` field before the `file` part, generated as the data arrives. */
export async function* multipartBody(
  boundary: string,
  filePath: string,
  data: AsyncIterable<Uint8Array | string>,
): AsyncIterable<Uint8Array> {
  const name = (path.basename(filePath) || 'file').replace(/["\r\n\\]/g, '_');
  yield Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\n${filePath}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\n` +
      `Content-Type: application/octet-stream\r\n\r\n`,
  );
  for await (const chunk of data) {
    if (typeof chunk === 'string') yield Buffer.from(chunk);
    else if (chunk.byteLength > 0) yield chunk;
  }
  yield Buffer.from(`\r\n--${boundary}--\r\n`);
}
