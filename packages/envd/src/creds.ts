// File system operations run with the capsule user's permissions.
//
// envd runs as root. For any other user it switches its *effective* uid, gid
// and supplementary groups around one synchronous block of file system calls
// and switches back before any other JavaScript runs. The kernel then makes
// every access decision (modes, ACLs, sticky bits, read-only mounts) exactly as
// it would for the user, and new files and directories are owned by the user.
// A switch costs about 1 ms (glibc applies it to every thread); root needs none.
//
// What keeps this sound: envd never has a *path-based* file system call in
// flight on libuv's thread pool while a switch is active. All path lookups
// (open, stat, mkdir, rename, readdir, inotify watches) are synchronous calls
// made inside `asUser`; only fd-based reads and writes run asynchronously, and
// those are not affected by credentials.
import type { User } from './users.js';

let rootGroups: number[] | undefined;
/** The uid currently switched to, if any (nested calls for the same user are free). */
let current: number | undefined;

// These exist on every POSIX platform; envd only runs on Linux.
const ids = process as Required<Pick<NodeJS.Process, 'setgroups' | 'setegid' | 'seteuid' | 'getgroups' | 'geteuid'>>;
const canSwitch = typeof process.geteuid === 'function' && ids.geteuid() === 0;

/** Runs `fn` synchronously with the effective credentials of `user`. */
export function asUser<T>(user: User, fn: () => T): T {
  if (!canSwitch || user.uid === 0) {
    if (current !== undefined) throw new Error('asUser(root) inside asUser for another user');
    return fn();
  }
  if (current === user.uid) return fn();
  if (current !== undefined) throw new Error('asUser for two different users at once');
  rootGroups ??= (ids.getgroups() ?? [0]).map(Number);
  ids.setgroups(user.groups);
  ids.setegid(user.gid);
  try {
    ids.seteuid(user.uid);
  } catch (err) {
    restore();
    throw err;
  }
  current = user.uid;
  try {
    return fn();
  } finally {
    current = undefined;
    ids.seteuid(0);
    restore();
  }
}

function restore(): void {
  ids.setegid(0);
  ids.setgroups(rootGroups ?? [0]);
}
