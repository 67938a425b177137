// Who a request acts as, and where its paths point.
//
// E2B clients name the capsule user in `Authorization: Basic base64(user:)`
// (RPCs) or the `username` query parameter (HTTP routes); without either, the
// default user set by POST /init applies (root until then).
import path from 'node:path';
import { lookupUser, type User } from './users.js';
import type { EnvdState } from './state.js';
import { Code, EnvdError } from './errors.js';

/** The user name carried by an `Authorization: Basic` header, if any. */
export function basicAuthUser(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Basic\s+(\S+)\s*$/i.exec(header);
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const name = colon === -1 ? decoded : decoded.slice(0, colon);
  return name || undefined;
}

export function resolveUser(state: EnvdState, requested: string | undefined): User {
  const name = requested || state.defaultUser;
  const user = lookupUser(name);
  if (!user) throw new EnvdError(`invalid username: '${name}'`, Code.Unauthenticated);
  return user;
}

/** Directory that relative paths and a missing cwd resolve against. */
export function baseDir(state: EnvdState, user: User): string {
  return state.defaultWorkdir ? expandHome(state.defaultWorkdir, user) : user.home;
}

function expandHome(p: string, user: User): string {
  if (p === '~' || p.startsWith('~/')) return path.join(user.home, p.slice(1));
  if (p.startsWith('~'))
    throw new EnvdError(`cannot expand another user's home directory in '${p}'`, Code.InvalidArgument);
  return p;
}

/**
 * The absolute path `p` names for `user`: `~` is the user's home, relative
 * paths are relative to the default workdir (or home). No jail: a capsule user
 * may reach whatever the kernel lets them reach, `..` included.
 */
export function resolvePath(state: EnvdState, user: User, p: string): string {
  if (p.includes('\0')) throw new EnvdError('path contains a NUL byte', Code.InvalidArgument);
  const expanded = expandHome(p, user);
  return path.resolve(baseDir(state, user), expanded);
}
