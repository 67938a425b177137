// process.Process: the table of processes envd started, and the RPCs on it.
// Processes outlive the streams that started them (as in E2B): a client that
// disconnects can come back with Connect by pid or tag. An exited process
// leaves the table as soon as its end event has been handed out.
import { once } from 'node:events';
import { create } from '@bufbuild/protobuf';
import type { HandlerContext, ServiceImpl } from '@connectrpc/connect';
import type { Process } from '@wrenn/contracts/gen/process/process_pb';
import {
  ProcessConfigSchema,
  ProcessEventSchema,
  Signal,
  type ProcessEvent,
  type ProcessSelector,
  type StartRequest,
} from '@wrenn/contracts/gen/process/process_pb';
import { Code, EnvdError } from '../errors.js';
import { basicAuthUser, resolveUser } from '../identity.js';
import { keepaliveInterval } from '../keepalive.js';
import type { EnvdState } from '../state.js';
import { ManagedProcess } from './managed.js';
import { prepare, spawnPiped, spawnPty } from './spawn.js';

/** What Start and Connect stream (their responses have the same shape). */
type Out = { event: ProcessEvent };

export class ProcessService {
  private readonly byPid = new Map<number, ManagedProcess>();

  constructor(private readonly state: EnvdState) {}

  /** Kills every process envd started (on shutdown). */
  killAll(): void {
    for (const p of this.byPid.values()) p.signal('SIGKILL');
  }

  private find(selector: ProcessSelector | undefined): ManagedProcess {
    const sel = selector?.selector;
    if (sel?.case === 'pid') {
      const p = this.byPid.get(sel.value);
      if (!p) throw new EnvdError(`process with pid ${sel.value} not found`, Code.NotFound);
      return p;
    }
    if (sel?.case === 'tag') {
      for (const p of this.byPid.values()) if (p.tag === sel.value) return p;
      throw new EnvdError(`process with tag '${sel.value}' not found`, Code.NotFound);
    }
    throw new EnvdError('process selector (pid or tag) is required', Code.InvalidArgument);
  }

  impl(): ServiceImpl<typeof Process> {
    return {
      list: () => ({
        processes: [...this.byPid.values()].map((p) => ({ pid: p.pid, tag: p.tag, config: p.config })),
      }),

      start: (req, ctx) => this.start(req, ctx),

      connect: (req, ctx) => this.stream(this.find(req.process), ctx),

      update: (req) => {
        const proc = this.find(req.process);
        if (req.pty) proc.resize(req.pty.size?.cols ?? 0, req.pty.size?.rows ?? 0);
        return {};
      },

      sendInput: async (req) => {
        const proc = this.find(req.process);
        const input = req.input?.input;
        if (!input?.case) throw new EnvdError('input (stdin or pty bytes) is required', Code.InvalidArgument);
        await proc.write(input.case, input.value);
        return {};
      },

      streamInput: async (requests) => {
        let proc: ManagedProcess | undefined;
        for await (const msg of requests) {
          const ev = msg.event;
          if (ev.case === 'start') {
            if (proc) throw new EnvdError('stream already started', Code.InvalidArgument);
            proc = this.find(ev.value.process);
          } else if (ev.case === 'data') {
            if (!proc) throw new EnvdError('the first message must be start', Code.InvalidArgument);
            const input = ev.value.input?.input;
            if (!input?.case) continue;
            await proc.write(input.case, input.value);
          }
        }
        return {};
      },

      sendSignal: (req) => {
        const proc = this.find(req.process);
        if (req.signal === Signal.SIGKILL) proc.signal('SIGKILL');
        else if (req.signal === Signal.SIGTERM) proc.signal('SIGTERM');
        else throw new EnvdError(`unsupported signal ${req.signal}: use SIGTERM or SIGKILL`, Code.InvalidArgument);
        return {};
      },

      closeStdin: (req) => {
        this.find(req.process).closeStdin();
        return {};
      },
    };
  }

  private async *start(req: StartRequest, ctx: HandlerContext): AsyncGenerator<Out> {
    const cfg = req.process;
    if (!cfg) throw new EnvdError('process config is required', Code.InvalidArgument);
    if (req.tag !== undefined) {
      for (const p of this.byPid.values()) {
        if (p.tag === req.tag) throw new EnvdError(`a process with tag '${req.tag}' is running`, Code.AlreadyExists);
      }
    }
    const user = resolveUser(this.state, basicAuthUser(ctx.requestHeader.get('authorization')));
    const size = req.pty ? { cols: req.pty.size?.cols || 80, rows: req.pty.size?.rows || 24 } : undefined;
    if (size && (size.cols > 65535 || size.rows > 65535)) {
      throw new EnvdError(`invalid terminal size ${size.cols}x${size.rows}`, Code.InvalidArgument);
    }
    const stdin = req.stdin ?? true; // E2B: stdin is open unless explicitly disabled
    const prepared = prepare(this.state, user, {
      cmd: cfg.cmd,
      args: cfg.args,
      envs: cfg.envs,
      cwd: cfg.cwd,
      pty: size,
      stdin,
    });
    const config = create(ProcessConfigSchema, { cmd: cfg.cmd, args: cfg.args, envs: cfg.envs, cwd: prepared.cwd });
    let proc: ManagedProcess;
    if (size) {
      proc = ManagedProcess.terminal(spawnPty(prepared, size), req.tag, config);
    } else {
      const child = spawnPiped(prepared, stdin);
      if (child.pid === undefined) {
        // The spawn failed; Node reports why in an 'error' event.
        const [err] = (await once(child, 'error')) as [Error];
        throw new EnvdError(`cannot start '${cfg.cmd}': ${err.message}`, Code.InvalidArgument);
      }
      proc = ManagedProcess.piped(child, req.tag, config);
    }
    this.byPid.set(proc.pid, proc);
    proc.onEnd(() => this.byPid.delete(proc.pid));
    // E2B semantics: a request deadline is the process's time limit.
    const timeoutMs = ctx.timeoutMs();
    if (timeoutMs !== undefined && timeoutMs > 0) {
      const timer = setTimeout(() => proc.signal('SIGKILL'), timeoutMs);
      proc.onEnd(() => clearTimeout(timer));
    }
    yield* this.stream(proc, ctx);
  }

  /** start{pid}, then live output and the end event, with keepalives while idle. */
  private async *stream(proc: ManagedProcess, ctx: HandlerContext): AsyncGenerator<Out> {
    const sub = proc.subscribe();
    try {
      yield { event: create(ProcessEventSchema, { event: { case: 'start', value: { pid: proc.pid } } }) };
      const idle = keepaliveInterval(this.state, ctx);
      for (;;) {
        const next = await sub.next(idle, ctx.signal);
        if (next === 'closed') return;
        if (next === 'timeout') {
          yield { event: create(ProcessEventSchema, { event: { case: 'keepalive', value: {} } }) };
          continue;
        }
        yield { event: next };
      }
    } finally {
      sub.unsubscribe();
    }
  }
}
