// filesystem.Filesystem: every call resolves its paths for the requesting user
// and runs its file system calls with that user's credentials (see creds.ts).
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import type { HandlerContext, ServiceImpl } from '@connectrpc/connect';
import type { Filesystem } from '@wrenn/contracts/gen/filesystem/filesystem_pb';
import {
  WatchDirResponseSchema,
  type EntryInfo,
  type FilesystemEvent,
  type WatchDirResponse,
} from '@wrenn/contracts/gen/filesystem/filesystem_pb';
import { asUser } from '../creds.js';
import { Code, EnvdError, errnoCode, fsError } from '../errors.js';
import { basicAuthUser, resolvePath, resolveUser } from '../identity.js';
import { AsyncQueue } from '../queue.js';
import type { EnvdState } from '../state.js';
import type { User } from '../users.js';
import { keepaliveInterval } from '../keepalive.js';
import { runAs } from '../process/spawn.js';
import { entryFromStats, entryInfo } from './entry.js';
import { DirWatcher } from './watcher.js';

/** ListDir refuses to build larger answers. */
const MAX_LIST_ENTRIES = 200_000;
/** A polling watcher keeps at most this many undelivered events (oldest dropped first). */
const MAX_POLLED_EVENTS = 10_000;
/** A WatchDir stream whose client falls this far behind is ended. */
const MAX_STREAM_BACKLOG = 10_000;
const MAX_POLLING_WATCHERS = 1_000;

interface PollingWatcher {
  watcher: DirWatcher;
  events: FilesystemEvent[];
  error: Error | undefined;
}

function requestUser(state: EnvdState, ctx: HandlerContext): User {
  return resolveUser(state, basicAuthUser(ctx.requestHeader.get('authorization')));
}

/** Runs `fn` as `user`, turning file system errors into Connect errors about `p`. */
function run<T>(user: User, p: string, fn: () => T): T {
  try {
    return asUser(user, fn);
  } catch (err) {
    throw fsError(err, p);
  }
}

function requireDirectory(p: string): void {
  if (!fs.statSync(p).isDirectory()) throw new EnvdError(`${p} is not a directory`, Code.InvalidArgument);
}

export class FilesystemService {
  private readonly polling = new Map<string, PollingWatcher>();

  constructor(private readonly state: EnvdState) {}

  /** Stops every watcher (on shutdown). */
  close(): void {
    for (const w of this.polling.values()) w.watcher.close();
    this.polling.clear();
  }

  impl(): ServiceImpl<typeof Filesystem> {
    const state = this.state;
    return {
      stat: (req, ctx) => {
        const user = requestUser(state, ctx);
        const p = resolvePath(state, user, req.path);
        return { entry: run(user, p, () => entryInfo(p)) };
      },

      makeDir: (req, ctx) => {
        const user = requestUser(state, ctx);
        const p = resolvePath(state, user, req.path);
        const entry = run(user, p, () => {
          let existing: fs.Stats | undefined;
          try {
            existing = fs.statSync(p);
          } catch (err) {
            if (errnoCode(err) !== 'ENOENT') throw err;
          }
          if (existing?.isDirectory()) throw new EnvdError(`directory already exists: ${p}`, Code.AlreadyExists);
          if (existing) throw new EnvdError(`path already exists but is not a directory: ${p}`, Code.InvalidArgument);
          // Created with the user's credentials, so every new directory is the user's.
          fs.mkdirSync(p, { recursive: true, mode: 0o755 });
          return entryInfo(p);
        });
        return { entry };
      },

      move: (req, ctx) => {
        const user = requestUser(state, ctx);
        const source = resolvePath(state, user, req.source);
        const destination = resolvePath(state, user, req.destination);
        const entry = run(user, source, () => {
          fs.lstatSync(source);
          fs.mkdirSync(path.dirname(destination), { recursive: true, mode: 0o755 });
          try {
            fs.renameSync(source, destination);
          } catch (err) {
            if (errnoCode(err) !== 'EXDEV') throw err;
            // Different file systems: copy, then remove the original.
            fs.cpSync(source, destination, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
            fs.rmSync(source, { recursive: true });
          }
          return entryInfo(destination);
        });
        return { entry };
      },

      listDir: (req, ctx) => {
        const user = requestUser(state, ctx);
        const p = resolvePath(state, user, req.path);
        const depth = req.depth === 0 ? 1 : req.depth;
        const entries = run(user, p, () => {
          requireDirectory(p);
          return listTree(p, depth);
        });
        return { entries };
      },

      remove: async (req, ctx) => {
        const user = requestUser(state, ctx);
        const p = resolvePath(state, user, req.path);
        const isDir = run(user, p, () => {
          if (fs.lstatSync(p).isDirectory()) return true;
          fs.unlinkSync(p);
          return false;
        });
        if (isDir) await removeTree(user, p);
        return {};
      },

      watchDir: (req, ctx) => this.watchDir(req.path, req.recursive, req.includeEntry, ctx),

      createWatcher: (req, ctx) => {
        if (this.polling.size >= MAX_POLLING_WATCHERS) {
          throw new EnvdError(`too many watchers (${MAX_POLLING_WATCHERS}); remove some first`, Code.ResourceExhausted);
        }
        const user = requestUser(state, ctx);
        const p = resolvePath(state, user, req.path);
        run(user, p, () => requireDirectory(p));
        const id = 'w' + randomBytes(12).toString('hex');
        const entry: PollingWatcher = { events: [], error: undefined, watcher: undefined as unknown as DirWatcher };
        entry.watcher = new DirWatcher({
          root: p,
          recursive: req.recursive,
          includeEntry: req.includeEntry,
          user,
          onEvent: (ev) => {
            entry.events.push(ev);
            if (entry.events.length > MAX_POLLED_EVENTS) entry.events.shift();
          },
          onError: (err) => {
            entry.error = err;
          },
        });
        run(user, p, () => entry.watcher.start());
        this.polling.set(id, entry);
        return { watcherId: id };
      },

      getWatcherEvents: (req) => {
        const entry = this.polling.get(req.watcherId);
        if (!entry) throw new EnvdError(`watcher with id ${req.watcherId} not found`, Code.NotFound);
        const events = entry.events;
        entry.events = [];
        if (events.length === 0 && entry.error) throw new EnvdError(entry.error.message, Code.FailedPrecondition);
        return { events };
      },

      removeWatcher: (req) => {
        const entry = this.polling.get(req.watcherId);
        if (!entry) throw new EnvdError(`watcher with id ${req.watcherId} not found`, Code.NotFound);
        entry.watcher.close();
        this.polling.delete(req.watcherId);
        return {};
      },
    };
  }

  private async *watchDir(
    rawPath: string,
    recursive: boolean,
    includeEntry: boolean,
    ctx: HandlerContext,
  ): AsyncGenerator<WatchDirResponse> {
    const user = requestUser(this.state, ctx);
    const p = resolvePath(this.state, user, rawPath);
    run(user, p, () => requireDirectory(p));
    const queue = new AsyncQueue<FilesystemEvent>();
    const watcher = new DirWatcher({
      root: p,
      recursive,
      includeEntry,
      user,
      onEvent: (ev) => {
        queue.push(ev);
        if (queue.length > MAX_STREAM_BACKLOG) {
          watcher.close();
          queue.abort(new EnvdError('client too slow: watch events were lost', Code.ResourceExhausted));
        }
      },
      onError: (err) => queue.close(new EnvdError(err.message, Code.FailedPrecondition)),
    });
    run(user, p, () => watcher.start());
    try {
      yield create(WatchDirResponseSchema, { event: { case: 'start', value: {} } });
      const idle = keepaliveInterval(this.state, ctx);
      for (;;) {
        const next = await queue.next(idle, ctx.signal);
        if (next === 'closed') return;
        if (next === 'timeout') {
          yield create(WatchDirResponseSchema, { event: { case: 'keepalive', value: {} } });
          continue;
        }
        yield create(WatchDirResponseSchema, { event: { case: 'filesystem', value: next.value } });
      }
    } finally {
      watcher.close();
    }
  }
}

/**
 * Removes a directory tree with `rm -rf` run as the user: a large tree (say
 * node_modules) takes seconds, which must not stall envd's event loop, and
 * rm refuses to remove `/`.
 */
async function removeTree(user: User, p: string): Promise<void> {
  const { code, stderr } = await runAs(user, '/bin/rm', ['-rf', '--', p]);
  if (code === 0) return;
  const message = stderr.trim().split('\n')[0] || `rm exited with ${code}`;
  const denied = /Permission denied|Operation not permitted|Read-only file system/.test(stderr);
  throw new EnvdError(`remove ${p}: ${message}`, denied ? Code.PermissionDenied : Code.FailedPrecondition);
}

/** Entries under `root` down to `depth` levels, without following symlinks. Unreadable subdirectories are listed but not entered. */
function listTree(root: string, depth: number): EntryInfo[] {
  const out: EntryInfo[] = [];
  const walk = (dir: string, level: number) => {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch (err) {
      if (level === 1) throw err;
      return;
    }
    names.sort();
    for (const name of names) {
      const full = path.join(dir, name);
      let st: fs.Stats;
      try {
        st = fs.lstatSync(full);
      } catch {
        continue; // removed while listing
      }
      if (out.length >= MAX_LIST_ENTRIES) {
        throw new EnvdError(
          `more than ${MAX_LIST_ENTRIES} entries under ${root}; use a smaller depth`,
          Code.ResourceExhausted,
        );
      }
      out.push(entryFromStats(full, st));
      if (level < depth && st.isDirectory()) walk(full, level + 1);
    }
  };
  walk(root, 1);
  return out;
}
