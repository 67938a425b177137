// EntryInfo for a path, as E2B's envd reports it: lstat data (a symlink is
// described as itself, with its resolved target), ls-style permissions and
// owner/group names from the capsule's user database.
import fs from 'node:fs';
import path from 'node:path';
import { create } from '@bufbuild/protobuf';
import { TimestampSchema, type Timestamp } from '@bufbuild/protobuf/wkt';
import { EntryInfoSchema, FileType, type EntryInfo } from '@wrenn/contracts/gen/filesystem/filesystem_pb';
import { groupName, userName } from '../users.js';

export function fileType(st: fs.Stats | fs.Dirent): FileType {
  if (st.isSymbolicLink()) return FileType.SYMLINK;
  if (st.isDirectory()) return FileType.DIRECTORY;
  if (st.isFile()) return FileType.FILE;
  return FileType.UNSPECIFIED;
}

/** `ls -l` style mode string, e.g. "-rwxr-xr-x", "drwxrwxrwt". */
export function permissionString(mode: number): string {
  const typeChar: Record<number, string> = {
    [fs.constants.S_IFDIR]: 'd',
    [fs.constants.S_IFLNK]: 'l',
    [fs.constants.S_IFCHR]: 'c',
    [fs.constants.S_IFBLK]: 'b',
    [fs.constants.S_IFIFO]: 'p',
    [fs.constants.S_IFSOCK]: 's',
  };
  let s = typeChar[mode & fs.constants.S_IFMT] ?? '-';
  const bits = 'rwxrwxrwx';
  for (let i = 0; i < 9; i++) s += mode & (1 << (8 - i)) ? bits[i] : '-';
  const chars = s.split('');
  const special = (idx: number, flag: number, set: string) => {
    if (mode & flag) chars[idx] = chars[idx] === '-' ? set.toUpperCase() : set;
  };
  special(3, 0o4000, 's');
  special(6, 0o2000, 's');
  special(9, 0o1000, 't');
  return chars.join('');
}

/** Timestamp from fractional milliseconds (stat's mtimeMs has sub-ms precision). */
function timestampOf(ms: number): Timestamp {
  const seconds = Math.floor(ms / 1000);
  const nanos = Math.min(999_999_999, Math.max(0, Math.round((ms - seconds * 1000) * 1e6)));
  return create(TimestampSchema, { seconds: BigInt(seconds), nanos });
}

/** Builds an EntryInfo from an lstat result; `p` is the path as reported to the client. */
export function entryFromStats(p: string, st: fs.Stats): EntryInfo {
  let symlinkTarget: string | undefined;
  if (st.isSymbolicLink()) {
    try {
      symlinkTarget = fs.realpathSync(p);
    } catch {
      // A dangling or unreadable link: report what it points at, unresolved.
      try {
        symlinkTarget = path.resolve(path.dirname(p), fs.readlinkSync(p));
      } catch {
        symlinkTarget = undefined;
      }
    }
  }
  return create(EntryInfoSchema, {
    name: path.basename(p),
    type: fileType(st),
    path: p,
    size: BigInt(st.size),
    mode: st.mode & 0o777,
    permissions: permissionString(st.mode),
    owner: userName(st.uid),
    group: groupName(st.gid),
    modifiedTime: timestampOf(st.mtimeMs),
    symlinkTarget,
  });
}

/** lstat + EntryInfo; must run inside the caller's asUser block. */
export function entryInfo(p: string): EntryInfo {
  return entryFromStats(p, fs.lstatSync(p));
}
