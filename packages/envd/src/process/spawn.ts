// Turning a StartRequest into a running child: environment, working
// directory, executable lookup (as the user), and the switch to the user.
//
// Children of a non-root user are started through util-linux `setpriv`
// (present in every Debian root), which sets the real/effective uid and gid
// AND the supplementary groups from the capsule's /etc/group before exec.
// Node's own `uid`/`gid` spawn options would drop every supplementary group,
// and node-pty's would keep root's. Every child leads its own session/process
// group, so a signal can reach the whole tree.
import type * as ChildProcessModule from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type * as NodePtyModule from 'node-pty';
import type { IPty } from 'node-pty';
import { asUser } from '../creds.js';
import { lazy, nodeRequire } from '../lazy.js';
import { Code, EnvdError, fsError } from '../errors.js';
import { baseDir, resolvePath } from '../identity.js';
import type { EnvdState } from '../state.js';
import type { User } from '../users.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface SpawnSpec {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd: string | undefined;
  pty: { cols: number; rows: number } | undefined;
  stdin: boolean;
}

export interface Prepared {
  executable: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  user: User;
}

let setprivPath: string | null | undefined;

function findSetpriv(): string | null {
  if (setprivPath === undefined) {
    setprivPath = ['/usr/bin/setpriv', '/bin/setpriv', '/usr/sbin/setpriv'].find((p) => fs.existsSync(p)) ?? null;
  }
  return setprivPath;
}

/** Mode-bit check of `bit` (1 = x, 4 = r) for `user`; the kernel still has the last word at exec time. */
function permits(st: fs.Stats, user: User, bit: number): boolean {
  if (user.uid === 0) return bit !== 1 || st.isDirectory() || (st.mode & 0o111) !== 0;
  if (st.uid === user.uid) return (st.mode & (bit << 6)) !== 0;
  if (user.groups.includes(st.gid)) return (st.mode & (bit << 3)) !== 0;
  return (st.mode & bit) !== 0;
}

function isExecutableFile(p: string, user: User): boolean {
  try {
    const st = fs.statSync(p);
    return st.isFile() && permits(st, user, 1);
  } catch {
    return false;
  }
}

/** Validates the request and works out exactly what to run; throws EnvdErrors. Runs as the user. */
export function prepare(state: EnvdState, user: User, spec: SpawnSpec): Prepared {
  if (!spec.cmd) throw new EnvdError('process.cmd is empty', Code.InvalidArgument);
  for (const [k, v] of Object.entries(spec.envs)) {
    if (!k || k.includes('=') || k.includes('\0') || v.includes('\0')) {
      throw new EnvdError(`invalid environment variable name or value: '${k}'`, Code.InvalidArgument);
    }
  }
  if (spec.args.some((a) => a.includes('\0')) || spec.cmd.includes('\0')) {
    throw new EnvdError('command or argument contains a NUL byte', Code.InvalidArgument);
  }

  const env: Record<string, string> = {
    PATH: process.env.PATH || DEFAULT_PATH,
    HOME: user.home,
    USER: user.name,
    LOGNAME: user.name,
    SHELL: user.shell,
  };
  if (spec.pty) env.TERM = 'xterm-256color';
  for (const [k, v] of state.envVars) env[k] = v;
  for (const [k, v] of Object.entries(spec.envs)) env[k] = v;

  const explicitCwd = spec.cwd !== undefined && spec.cwd !== '';
  let cwd = explicitCwd ? resolvePath(state, user, spec.cwd as string) : baseDir(state, user);

  return asUser(user, () => {
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(cwd);
    } catch (err) {
      if (explicitCwd) {
        const e = fsError(err, cwd);
        throw new EnvdError(`cwd '${cwd}' is not usable: ${e.rawMessage}`, Code.InvalidArgument);
      }
    }
    if (explicitCwd && st && !st.isDirectory())
      throw new EnvdError(`cwd '${cwd}' is not a directory`, Code.InvalidArgument);
    if (explicitCwd && st && !permits(st, user, 1)) {
      throw new EnvdError(`cwd '${cwd}': permission denied`, Code.PermissionDenied);
    }
    // A home directory that does not exist (e.g. nobody's) is not the caller's fault: start in /.
    if (!explicitCwd && (!st || !st.isDirectory() || !permits(st, user, 1))) cwd = '/';

    let executable: string | undefined;
    if (spec.cmd.includes('/')) {
      const candidate = path.resolve(cwd, spec.cmd);
      if (isExecutableFile(candidate, user)) executable = candidate;
    } else {
      for (const dir of (env.PATH ?? '').split(':')) {
        const candidate = path.resolve(cwd, dir || '.', spec.cmd);
        if (isExecutableFile(candidate, user)) {
          executable = candidate;
          break;
        }
      }
    }
    if (!executable) {
      throw new EnvdError(`executable file not found or not executable: '${spec.cmd}'`, Code.InvalidArgument);
    }
    return { executable, args: spec.args, env, cwd, user };
  });
}

/** The command line that runs `p` as its user: directly for root, through setpriv otherwise. */
function commandLine(p: Prepared, forPty: boolean): [string, string[]] {
  if (p.user.uid === 0) return [p.executable, p.args];
  const setpriv = findSetpriv();
  if (!setpriv) {
    if (forPty) {
      throw new EnvdError(
        'setpriv (util-linux) is missing: cannot start a terminal as a non-root user',
        Code.FailedPrecondition,
      );
    }
    return [p.executable, p.args]; // fallback: Node's uid/gid switch (supplementary groups dropped)
  }
  const groups = p.user.groups.length > 0 ? ['--groups', p.user.groups.join(',')] : ['--clear-groups'];
  return [
    setpriv,
    ['--reuid', String(p.user.uid), '--regid', String(p.user.gid), ...groups, '--', p.executable, ...p.args],
  ];
}

const childProcess = lazy(() => nodeRequire('node:child_process') as typeof ChildProcessModule);

/** Runs a helper command as `user` (no shell, no stdin); resolves with its exit code and stderr. */
export function runAs(user: User, executable: string, args: string[]): Promise<{ code: number; stderr: string }> {
  const p: Prepared = { executable, args, env: { PATH: DEFAULT_PATH, LC_ALL: 'C' }, cwd: '/', user };
  return new Promise((resolve) => {
    const child = spawnPiped(p, false);
    let stderr = '';
    child.stdout?.resume();
    child.stderr?.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString();
    });
    child.on('error', (err) => resolve({ code: -1, stderr: err.message }));
    child.on('close', (code) => resolve({ code: code ?? -1, stderr }));
  });
}

export function spawnPiped(p: Prepared, stdin: boolean): ChildProcess {
  const [file, args] = commandLine(p, false);
  const direct = file === p.executable;
  return childProcess().spawn(file, args, {
    cwd: p.cwd,
    env: p.env,
    detached: true, // own session and process group
    stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    argv0: direct ? path.basename(p.executable) : undefined,
    uid: direct && p.user.uid !== 0 ? p.user.uid : undefined,
    gid: direct && p.user.uid !== 0 ? p.user.gid : undefined,
  });
}

/** node-pty is loaded on first use only: it is native, and most capsules never open a terminal. */
const loadPty = lazy(() => nodeRequire('node-pty') as typeof NodePtyModule);

export function spawnPty(p: Prepared, size: { cols: number; rows: number }): IPty {
  const [file, args] = commandLine(p, true);
  const pty = loadPty().spawn(file, args, {
    cols: size.cols,
    rows: size.rows,
    cwd: p.cwd,
    env: p.env,
    encoding: null,
  });
  // The terminal belongs to its user, as after a login (programs that reopen it by name need that).
  const ptsName = (pty as unknown as { ptsName?: string }).ptsName;
  if (p.user.uid !== 0 && ptsName) {
    try {
      fs.chownSync(ptsName, p.user.uid, p.user.gid);
    } catch {
      // not fatal: the process still has the terminal open
    }
  }
  return pty;
}
