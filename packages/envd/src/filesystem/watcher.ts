// Directory watching on top of fs.watch (inotify), one watch per directory.
//
// fs.watch only says "rename" (something appeared, vanished or moved) or
// "change" (content or attributes changed) for a name. The E2B event types
// are recovered from the file system state when a batch of events is handled
// (inotify delivers related events together, so a batch is what one libuv read
// returned):
//   rename + exists         -> CREATE (new subdirectories are watched, and what
//                              is already inside them is reported as CREATE)
//   rename + gone           -> RENAME if something appeared in the same batch
//                              (a move inside the tree), else REMOVE
//   change                  -> CHMOD if only the inode changed (ctime > mtime),
//                              else WRITE
// Watches are added with the watching user's credentials, so a user can only
// watch directories they may read.
import fs from 'node:fs';
import path from 'node:path';
import { create } from '@bufbuild/protobuf';
import { EventType, FilesystemEventSchema, type FilesystemEvent } from '@wrenn/contracts/gen/filesystem/filesystem_pb';
import { asUser } from '../creds.js';
import type { User } from '../users.js';
import { entryFromStats } from './entry.js';

/** Upper bound on directories one recursive watcher follows. */
const MAX_WATCHED_DIRS = 10_000;

interface Pending {
  dir: string;
  kind: 'rename' | 'change';
  name: string;
}

export interface WatcherOptions {
  root: string;
  recursive: boolean;
  includeEntry: boolean;
  user: User;
  onEvent: (event: FilesystemEvent) => void;
  /** Called once when the watcher can no longer work (e.g. its directory was removed). */
  onError: (err: Error) => void;
}

export class DirWatcher {
  private readonly watches = new Map<string, fs.FSWatcher>();
  private readonly known = new Map<string, Set<string>>();
  private pending: Pending[] = [];
  private flushScheduled = false;
  private closed = false;

  constructor(private readonly opts: WatcherOptions) {}

  /** Adds the watches; throws if the root cannot be watched. Call inside asUser(user). */
  start(): void {
    this.addDir(this.opts.root, true, undefined);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.watches.values()) w.close();
    this.watches.clear();
    this.known.clear();
    this.pending = [];
  }

  /** Watches `dir` (and, when recursive, its subdirectories); reports existing entries via `created` if given. */
  private addDir(dir: string, isRoot: boolean, created: FilesystemEvent[] | undefined): void {
    if (this.watches.has(dir)) return;
    if (this.watches.size >= MAX_WATCHED_DIRS) return;
    let watcher: fs.FSWatcher;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
      watcher = fs.watch(dir, { persistent: true }, (kind, name) => this.onRaw(dir, kind, name));
    } catch (err) {
      if (isRoot) throw err;
      return; // an unreadable or vanished subdirectory is simply not watched
    }
    watcher.on('error', () => this.dropDir(dir));
    this.watches.set(dir, watcher);
    this.known.set(dir, new Set(entries.map((e) => e.name)));
    for (const e of entries) {
      const full = path.join(dir, e.name);
      if (created) created.push(this.event(full, EventType.CREATE));
      if (this.opts.recursive && e.isDirectory()) this.addDir(full, false, created);
    }
  }

  private dropDir(dir: string): void {
    for (const [d, w] of this.watches) {
      if (d === dir || d.startsWith(dir + '/')) {
        w.close();
        this.watches.delete(d);
        this.known.delete(d);
      }
    }
  }

  private onRaw(dir: string, kind: string, name: string | Buffer | null): void {
    if (this.closed || name === null) return;
    this.pending.push({ dir, kind: kind === 'change' ? 'change' : 'rename', name: String(name) });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private event(full: string, type: EventType, st?: fs.Stats): FilesystemEvent {
    const ev = create(FilesystemEventSchema, { name: path.relative(this.opts.root, full), type });
    if (this.opts.includeEntry) {
      try {
        ev.entry = entryFromStats(full, st ?? fs.lstatSync(full));
      } catch {
        // gone already: no entry to describe
      }
    }
    return ev;
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.closed) return;
    try {
      this.handleBatch();
    } catch (err) {
      this.close();
      this.opts.onError(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private handleBatch(): void {
    const batch = this.pending;
    this.pending = [];
    const out: FilesystemEvent[] = [];
    let rootGone = false;
    asUser(this.opts.user, () => {
      if (!exists(this.opts.root)) {
        rootGone = true;
        return;
      }
      const lstats = new Map<string, fs.Stats | null>();
      const statOf = (full: string) => {
        if (!lstats.has(full)) lstats.set(full, lstatOrNull(full));
        return lstats.get(full) ?? null;
      };
      const appeared = batch.some((p) => p.kind === 'rename' && statOf(path.join(p.dir, p.name)) !== null);
      // Directories moved within the tree keep their contents: do not report those as new.
      const movedWithin = batch.some(
        (p) => p.kind === 'rename' && this.known.get(p.dir)?.has(p.name) && statOf(path.join(p.dir, p.name)) === null,
      );
      const seen = new Set<string>();
      for (const p of batch) {
        const known = this.known.get(p.dir);
        if (!known) continue; // its directory is no longer watched
        const full = path.join(p.dir, p.name);
        const st = statOf(full);
        if (p.kind === 'change') {
          if (!st) continue;
          const type = st.ctimeMs > st.mtimeMs ? EventType.CHMOD : EventType.WRITE;
          const key = `${type}:${full}`;
          if (seen.has(key)) continue;
          seen.add(key);
          out.push(this.event(full, type, st));
          continue;
        }
        if (seen.has(`rename:${full}`)) continue;
        seen.add(`rename:${full}`);
        if (st) {
          known.add(p.name);
          out.push(this.event(full, EventType.CREATE, st));
          if (this.opts.recursive && st.isDirectory()) this.addDir(full, false, movedWithin ? undefined : out);
        } else if (known.delete(p.name)) {
          out.push(this.event(full, appeared ? EventType.RENAME : EventType.REMOVE));
          this.dropDir(full);
        } else if (p.name !== path.basename(p.dir)) {
          // Created and removed again before we looked. (A nameless event about a
          // watched directory itself carries its base name: those are skipped.)
          out.push(this.event(full, EventType.CREATE), this.event(full, EventType.REMOVE));
        }
      }
    });
    for (const ev of out) this.opts.onEvent(ev);
    if (rootGone) {
      this.close();
      this.opts.onError(new Error(`watched directory ${this.opts.root} was removed`));
    }
  }
}

function lstatOrNull(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch {
    return null;
  }
}

function exists(p: string): boolean {
  return lstatOrNull(p) !== null;
}
