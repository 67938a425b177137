// Connect RPC server for hostagent.v1.HostAgentService. One port speaks both
// h2c (needed for the client-streaming WriteFileStream) and HTTP/1.1 (what
// plain Connect clients use for everything else). Every request is validated
// here, before the manager (which checks again).
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { Duplex } from 'node:stream';
import os from 'node:os';
import fs from 'node:fs/promises';
import { createHash, timingSafeEqual } from 'node:crypto';
import { create, type DescMethod } from '@bufbuild/protobuf';
import type { ConnectRouter, HandlerContext, ServiceImpl } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import {
  ExecStreamResponseSchema,
  FileEntrySchema,
  HostAgentService,
  MetricPointSchema,
  WatchDirResponseSchema,
  PtyAttachResponseSchema,
  SandboxInfoSchema,
  type ExecRequest,
  type ExecStreamResponse,
  type FileEntry,
  type MetricPoint,
  type PtyAttachResponse,
  type WriteFileStreamRequest,
} from '@wrenn/contracts/gen/hostagent/v1/hostagent_pb';
import { Code, ConnectError, invalidArgument } from './errors.js';
import { CapsuleProxy } from './proxy.js';
import type { CapsuleInfo, FileInfo, Logger, ProcEvent, SandboxManager, Selector } from './manager.js';
import { METRIC_RANGES, isMetricRange, type MetricSample } from './metrics.js';
import {
  checkCapsuleId,
  checkEnv,
  checkPath,
  checkResources,
  checkTag,
  checkTemplateName,
  checkTimeout,
  checkUser,
  checkUuidField,
} from './validate.js';
import { AGENT_H2_CONNECTION_WINDOW, AGENT_H2_SETTINGS } from '@wrenn/contracts';

export const AGENT_VERSION = '0.1.0';
/** Largest request or response message (unary file contents included). */
export const MAX_MESSAGE_BYTES = 65 * 1024 * 1024;

export interface AgentServerOptions {
  manager: SandboxManager;
  log: Logger;
  /** When set, every call must carry `Authorization: Bearer <token>`. */
  token: string | null;
  dataDir: string;
  /** Called after Terminate has answered: destroy everything and exit. */
  onTerminate: () => void;
  /** Aborting it ends every open stream (agent shutdown). */
  shutdownSignal?: AbortSignal;
}

/**
 * Node's plaintext HTTP/2 server cannot fall back to HTTP/1.1 (allowHTTP1
 * needs TLS/ALPN), so a TCP listener sniffs the first bytes: the HTTP/2
 * connection preface starts with "PRI", which no HTTP/1 method does.
 */
export class AgentServer {
  private readonly tcp: net.Server;
  private readonly h1: http.Server;
  private readonly h2: http2.Http2Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(opts: AgentServerOptions) {
    const handler = connectNodeAdapter({
      routes: (router: ConnectRouter) => router.service(HostAgentService, guardService(serviceImpl(opts), opts)),
      readMaxBytes: MAX_MESSAGE_BYTES,
      writeMaxBytes: MAX_MESSAGE_BYTES,
      // No gzip/brotli: compressing every 64 KiB file chunk capped downloads at ~15 MiB/s
      // on this CPU, and agent traffic stays on the host or a fast network.
      acceptCompression: [],
      shutdownSignal: opts.shutdownSignal,
    });
    // HTTP/1.1 also carries the capsule port proxy (/proxy/…, including WebSocket upgrades).
    const proxy = new CapsuleProxy({ manager: opts.manager, token: opts.token, log: opts.log });
    this.h1 = http.createServer({ keepAliveTimeout: 620_000, requestTimeout: 0 }, (req, res) =>
      CapsuleProxy.matches(req) ? proxy.handleRequest(req, res) : void handler(req, res),
    );
    this.h1.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) =>
      CapsuleProxy.matches(req) ? proxy.handleUpgrade(req, socket, head) : socket.destroy(),
    );
    // Large frames and windows (every frame also crosses the sniffing JS stream below, at a cost per frame).
    this.h2 = http2.createServer({ settings: AGENT_H2_SETTINGS }, handler);
    this.h2.on('session', (session) => session.setLocalWindowSize(AGENT_H2_CONNECTION_WINDOW));
    this.tcp = net.createServer((socket) => this.sniff(socket));
  }

  private sniff(socket: net.Socket): void {
    // Small RPC messages must not wait for Nagle + delayed ACK (~40 ms per round trip).
    socket.setNoDelay(true);
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', () => {});
    let head = Buffer.alloc(0);
    const onData = (buf: Buffer) => {
      head = Buffer.concat([head, buf]);
      if (head.length < 3) return;
      socket.off('data', onData);
      socket.pause();
      if (head.subarray(0, 3).toString('latin1') === 'PRI') {
        // http2 reads the socket's native handle, bypassing unshift(): hand it a
        // JS stream that replays the sniffed bytes first.
        this.h2.emit('connection', replayStream(socket, head));
      } else {
        socket.unshift(head);
        this.h1.emit('connection', socket);
        socket.resume();
      }
    };
    socket.on('data', onData);
  }

  listen(port: number, host: string): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      this.tcp.once('error', reject);
      this.tcp.listen(port, host, () => {
        this.tcp.off('error', reject);
        resolve(this.tcp.address() as net.AddressInfo);
      });
    });
  }

  /** Stops accepting, then closes every connection (open streams were ended by shutdownSignal). */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.tcp.close(() => resolve()));
    this.h1.closeIdleConnections();
    setTimeout(() => {
      for (const s of this.sockets) s.destroy();
    }, 1000).unref();
    await closed;
  }
}

function replayStream(socket: net.Socket, head: Buffer): Duplex {
  const d = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk, encoding, cb) {
      socket.write(chunk, encoding, cb);
    },
    // nghttp2 emits many small frames at once: one syscall for the batch, not one per frame.
    writev(chunks, cb) {
      socket.cork();
      for (let i = 0; i < chunks.length; i++) {
        socket.write(chunks[i]!.chunk, chunks[i]!.encoding, i === chunks.length - 1 ? cb : undefined);
      }
      socket.uncork();
    },
    final(cb) {
      socket.end();
      cb();
    },
    destroy(err, cb) {
      socket.destroy(err ?? undefined);
      cb(err);
    },
  });
  // The http2 session learns of failures from the socket's close; an 'error' left unheard would crash the agent.
  d.on('error', () => {});
  d.push(head);
  socket.on('data', (chunk) => {
    if (!d.push(chunk)) socket.pause();
  });
  socket.on('end', () => d.push(null));
  socket.on('error', (err) => d.destroy(err));
  socket.on('close', () => d.destroy());
  return d;
}

/** The manager's view of an Exec/ExecStream request. */
function execParams(req: ExecRequest) {
  const { cmd, args, envs, cwd, user, timeoutSec, stdin } = req;
  return { cmd, args, envs, cwd, user, timeoutSec, stdin };
}

// ------------------------------------------------------------ auth & errors

function tokenChecker(token: string | null): (ctx: HandlerContext) => void {
  if (token === null) return () => {};
  // Compare digests: constant time whatever the length of what was sent.
  const want = createHash('sha256').update(`Bearer ${token}`).digest();
  return (ctx) => {
    const got = createHash('sha256')
      .update(ctx.requestHeader.get('authorization') ?? '')
      .digest();
    if (!timingSafeEqual(got, want)) throw new ConnectError('missing or invalid agent token', Code.Unauthenticated);
  };
}

/**
 * Errors without a Connect code are logged and returned as a bare Internal
 * error. Connect errors keep code and message but not their metadata: one
 * relayed from envd carries envd's HTTP/1.1 response headers (keep-alive,
 * connection), which are not ours to send and are illegal over HTTP/2.
 */
function sanitize(err: unknown, method: DescMethod, log: Logger): ConnectError {
  if (err instanceof ConnectError) return new ConnectError(err.rawMessage, err.code);
  log.error({ err, method: method.name }, 'unexpected error in RPC handler');
  return new ConnectError('internal error', Code.Internal);
}

type AnyImpl = (req: unknown, ctx: HandlerContext) => unknown;

/** Wraps every method with the token check and error sanitising. */
function guardService(
  impl: ServiceImpl<typeof HostAgentService>,
  opts: AgentServerOptions,
): ServiceImpl<typeof HostAgentService> {
  const check = tokenChecker(opts.token);
  const out: Record<string, AnyImpl> = {};
  for (const method of HostAgentService.methods) {
    const fn = (impl as unknown as Record<string, AnyImpl>)[method.localName]!.bind(impl);
    if (method.methodKind === 'server_streaming') {
      out[method.localName] = async function* (req, ctx) {
        check(ctx);
        try {
          yield* fn(req, ctx) as AsyncIterable<unknown>;
        } catch (err) {
          throw sanitize(err, method, opts.log);
        }
      };
    } else {
      out[method.localName] = async (req, ctx) => {
        check(ctx);
        try {
          return await fn(req, ctx);
        } catch (err) {
          throw sanitize(err, method, opts.log);
        }
      };
    }
  }
  return out as unknown as ServiceImpl<typeof HostAgentService>;
}

// ------------------------------------------------------------ conversions

const unix = (ms: number) => BigInt(Math.floor(ms / 1000));

function sandboxInfo(c: CapsuleInfo) {
  return create(SandboxInfoSchema, {
    sandboxId: c.id,
    status: c.state,
    template: c.template,
    vcpus: c.vcpus,
    memoryMb: c.memoryMb,
    diskSizeMb: c.diskSizeMb,
    hostIp: c.hostIp,
    createdAtUnix: unix(c.createdAt),
    lastActiveAtUnix: unix(c.lastActiveAt),
    timeoutSec: c.timeoutSec,
    teamId: c.teamId,
    templateId: c.templateId,
    metadata: c.metadata,
  });
}

function fileEntry(f: FileInfo): FileEntry {
  return create(FileEntrySchema, { ...f, size: BigInt(f.size), modifiedAt: BigInt(f.modifiedAt) });
}

function metricPoints(samples: MetricSample[]): MetricPoint[] {
  return samples.map((s) =>
    create(MetricPointSchema, {
      timestampUnix: unix(s.ts),
      cpuPct: s.cpuPct,
      memBytes: BigInt(s.memBytes),
      diskBytes: BigInt(s.diskBytes),
    }),
  );
}

function execEvent(ev: ProcEvent): ExecStreamResponse {
  switch (ev.type) {
    case 'start':
      return create(ExecStreamResponseSchema, { event: { case: 'start', value: { pid: ev.pid } } });
    case 'stdout':
    case 'pty':
      return create(ExecStreamResponseSchema, {
        event: { case: 'data', value: { output: { case: 'stdout', value: ev.data } } },
      });
    case 'stderr':
      return create(ExecStreamResponseSchema, {
        event: { case: 'data', value: { output: { case: 'stderr', value: ev.data } } },
      });
    case 'end':
      return create(ExecStreamResponseSchema, {
        event: { case: 'end', value: { exitCode: ev.exitCode, error: ev.error } },
      });
  }
}

/** CreateSnapshot and FlattenRootfs: a capsule, a template name and the template's team and id. */
function checkNewTemplate(req: { sandboxId: string; name: string; teamId: string; templateId: string }): void {
  checkCapsuleId(req.sandboxId);
  if (req.name === '') throw invalidArgument('name is required');
  checkTemplateName(req.name);
  checkUuidField('team_id', req.teamId);
  checkUuidField('template_id', req.templateId);
}

function ptyEvent(ev: ProcEvent, tag: string): PtyAttachResponse | null {
  switch (ev.type) {
    case 'start':
      return create(PtyAttachResponseSchema, { event: { case: 'started', value: { pid: ev.pid, tag } } });
    case 'end':
      return create(PtyAttachResponseSchema, {
        event: { case: 'exited', value: { exitCode: ev.exitCode, error: ev.error } },
      });
    default:
      return create(PtyAttachResponseSchema, { event: { case: 'output', value: { data: ev.data } } });
  }
}

function selector(
  sel: { case: 'pid'; value: number } | { case: 'tag'; value: string } | { case: undefined },
): Selector {
  if (sel.case === 'pid') return { pid: sel.value };
  if (sel.case === 'tag') return { tag: checkTag(sel.value) };
  throw invalidArgument('a process selector (pid or tag) is required');
}

function checkCommandFields(req: { cmd: string; envs: Record<string, string>; cwd: string; user: string }): void {
  if (req.cmd === '') throw invalidArgument('cmd is required');
  checkEnv(req.envs);
  checkUser(req.user);
  if (req.cwd !== '') checkPath(req.cwd, 'cwd');
}

// ------------------------------------------------------------ the service

function serviceImpl(opts: AgentServerOptions): ServiceImpl<typeof HostAgentService> {
  const m = opts.manager;
  return {
    async createSandbox(req) {
      checkCapsuleId(req.sandboxId);
      checkTemplateName(req.template);
      checkUuidField('team_id', req.teamId);
      checkUuidField('template_id', req.templateId);
      checkResources(req);
      checkUser(req.defaultUser, 'default_user');
      checkEnv(req.defaultEnv, 'default_env');
      const c = await m.create({
        id: req.sandboxId,
        template: req.template,
        teamId: req.teamId,
        templateId: req.templateId,
        vcpus: req.vcpus,
        memoryMb: req.memoryMb,
        diskSizeMb: req.diskSizeMb,
        timeoutSec: req.timeoutSec,
        defaultUser: req.defaultUser,
        defaultEnv: req.defaultEnv,
        startCommands: req.startCommands.map((sc) => ({ cmd: sc.cmd, user: sc.user, cwd: sc.cwd, env: sc.env })),
      });
      return { sandboxId: c.id, status: c.state, hostIp: c.hostIp, metadata: c.metadata };
    },

    async destroySandbox(req) {
      await m.destroy(checkCapsuleId(req.sandboxId));
      return {};
    },

    async pauseSandbox(req) {
      await m.pause(checkCapsuleId(req.sandboxId));
      return {};
    },

    async resumeSandbox(req) {
      checkCapsuleId(req.sandboxId);
      checkTimeout(req.timeoutSec);
      checkUser(req.defaultUser, 'default_user');
      checkEnv(req.defaultEnv, 'default_env');
      const c = await m.resume(req.sandboxId, {
        timeoutSec: req.timeoutSec,
        defaultUser: req.defaultUser,
        defaultEnv: req.defaultEnv,
      });
      return { sandboxId: c.id, status: c.state, hostIp: c.hostIp, metadata: c.metadata };
    },

    async pingSandbox(req) {
      m.ping(checkCapsuleId(req.sandboxId));
      return {};
    },

    async setSandboxTimeout(req) {
      await m.setTimeout(checkCapsuleId(req.sandboxId), req.timeoutSec);
      return {};
    },

    async listSandboxes() {
      const { capsules, autoPaused } = m.list();
      return { sandboxes: capsules.map(sandboxInfo), autoPausedSandboxIds: autoPaused };
    },

    async terminate() {
      setImmediate(opts.onTerminate);
      return {};
    },

    async hostInfo() {
      const st = await fs.statfs(opts.dataDir).catch(() => null);
      const counts = m.counts();
      return {
        arch: os.arch(),
        cpuCores: os.availableParallelism(),
        memoryMb: BigInt(Math.floor(os.totalmem() / 1024 / 1024)),
        diskGb: st ? BigInt(Math.floor((st.blocks * st.bsize) / 1024 ** 3)) : 0n,
        version: AGENT_VERSION,
        runningSandboxes: counts.running,
        pausedSandboxes: counts.paused,
      };
    },

    async exec(req, ctx) {
      checkCapsuleId(req.sandboxId);
      checkCommandFields(req);
      checkTimeout(req.timeoutSec);
      const r = await m.exec(req.sandboxId, execParams(req), ctx.signal);
      return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode, durationMs: BigInt(r.durationMs) };
    },

    async *execStream(req, ctx) {
      checkCapsuleId(req.sandboxId);
      checkCommandFields(req);
      checkTimeout(req.timeoutSec);
      const events = m.execStream(req.sandboxId, execParams(req), ctx.signal);
      for await (const ev of events) yield execEvent(ev);
    },

    async startBackground(req) {
      checkCapsuleId(req.sandboxId);
      checkCommandFields(req);
      if (req.tag !== '') checkTag(req.tag);
      return m.startBackground(req.sandboxId, {
        cmd: req.cmd,
        args: req.args,
        envs: req.envs,
        cwd: req.cwd,
        user: req.user,
        tag: req.tag,
      });
    },

    async listProcesses(req) {
      const processes = await m.listProcesses(checkCapsuleId(req.sandboxId));
      return { processes };
    },

    async killProcess(req) {
      checkCapsuleId(req.sandboxId);
      const sel = selector(req.selector);
      await m.killProcess(req.sandboxId, sel, req.signal);
      return {};
    },

    async *connectProcess(req, ctx) {
      checkCapsuleId(req.sandboxId);
      const sel = selector(req.selector);
      for await (const ev of m.connectProcess(req.sandboxId, sel, ctx.signal)) yield execEvent(ev);
    },

    async writeFile(req) {
      checkCapsuleId(req.sandboxId);
      checkPath(req.path);
      checkUser(req.user);
      await m.writeFile(req.sandboxId, req.path, req.user, req.content);
      return {};
    },

    async readFile(req) {
      checkCapsuleId(req.sandboxId);
      checkPath(req.path);
      checkUser(req.user);
      return { content: await m.readFile(req.sandboxId, req.path, req.user) };
    },

    async writeFileStream(reqs: AsyncIterable<WriteFileStreamRequest>, ctx) {
      const it = reqs[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done || first.value.content.case !== 'meta') {
        throw invalidArgument('the first WriteFileStream message must be meta {sandbox_id, path}');
      }
      const meta = first.value.content.value;
      checkCapsuleId(meta.sandboxId);
      checkPath(meta.path);
      checkUser(meta.user);
      async function* chunks(): AsyncGenerator<Uint8Array> {
        for (;;) {
          const next = await it.next();
          if (next.done) return;
          if (next.value.content.case !== 'chunk') throw invalidArgument('only the first message may carry meta');
          yield next.value.content.value;
        }
      }
      await m.writeFileStream(meta.sandboxId, meta.path, meta.user, chunks(), ctx.signal);
      return {};
    },

    async *readFileStream(req, ctx) {
      checkCapsuleId(req.sandboxId);
      checkPath(req.path);
      checkUser(req.user);
      for await (const chunk of m.readFileStream(req.sandboxId, req.path, req.user, ctx.signal)) {
        yield { chunk };
      }
    },

    async listDir(req) {
      checkCapsuleId(req.sandboxId);
      checkPath(req.path);
      checkUser(req.user);
      const entries = await m.listDir(req.sandboxId, req.path, req.depth, req.user);
      return { entries: entries.map(fileEntry) };
    },

    async makeDir(req) {
      checkCapsuleId(req.sandboxId);
      checkPath(req.path);
      checkUser(req.user);
      const entry = await m.makeDir(req.sandboxId, req.path, req.user);
      return entry ? { entry: fileEntry(entry) } : {};
    },

    async removePath(req) {
      checkCapsuleId(req.sandboxId);
      checkPath(req.path);
      checkUser(req.user);
      await m.remove(req.sandboxId, req.path, req.user);
      return {};
    },

    async *watchDir(req, ctx) {
      checkCapsuleId(req.sandboxId);
      checkPath(req.path);
      checkUser(req.user);
      for await (const ev of m.watchDir(req.sandboxId, req.path, req.recursive, req.user, ctx.signal)) {
        yield create(WatchDirResponseSchema, {
          event:
            ev.type === 'started'
              ? { case: 'started', value: {} }
              : { case: 'change', value: { name: ev.name, op: ev.op } },
        });
      }
    },

    async *ptyAttach(req, ctx) {
      checkCapsuleId(req.sandboxId);
      checkTag(req.tag);
      if (req.cmd !== '') checkCommandFields(req);
      const events = m.ptyAttach(
        req.sandboxId,
        {
          tag: req.tag,
          cmd: req.cmd,
          args: req.args,
          envs: req.envs,
          cwd: req.cwd,
          user: req.user,
          cols: req.cols || 80,
          rows: req.rows || 24,
        },
        ctx.signal,
      );
      for await (const ev of events) {
        const out = ptyEvent(ev, req.tag);
        if (out) yield out;
      }
    },

    async ptySendInput(req) {
      checkCapsuleId(req.sandboxId);
      checkTag(req.tag);
      await m.ptySendInput(req.sandboxId, req.tag, req.data);
      return {};
    },

    async ptyResize(req) {
      checkCapsuleId(req.sandboxId);
      checkTag(req.tag);
      await m.ptyResize(req.sandboxId, req.tag, req.cols, req.rows);
      return {};
    },

    async ptyKill(req) {
      checkCapsuleId(req.sandboxId);
      checkTag(req.tag);
      await m.ptyKill(req.sandboxId, req.tag);
      return {};
    },

    async createSnapshot(req) {
      checkNewTemplate(req);
      const { sizeBytes } = await m.createSnapshot(req);
      return { name: req.name, sizeBytes: BigInt(sizeBytes) };
    },
    async deleteSnapshot(req) {
      if (req.name !== '') checkTemplateName(req.name);
      checkUuidField('team_id', req.teamId);
      checkUuidField('template_id', req.templateId);
      await m.deleteSnapshot(req);
      return {};
    },
    async flattenRootfs(req) {
      checkNewTemplate(req);
      const { sizeBytes } = await m.flattenRootfs(req);
      return { sizeBytes: BigInt(sizeBytes) };
    },

    async getSandboxMetrics(req) {
      checkCapsuleId(req.sandboxId);
      if (!isMetricRange(req.range)) {
        throw invalidArgument(`range must be one of ${METRIC_RANGES.join(', ')}, got "${req.range}"`);
      }
      return { points: metricPoints(m.getMetrics(req.sandboxId, req.range)) };
    },

    async flushSandboxMetrics(req) {
      const t = m.flushMetrics(checkCapsuleId(req.sandboxId));
      return { points10m: metricPoints(t.raw), points2h: metricPoints(t.mid), points24h: metricPoints(t.long) };
    },
  };
}
