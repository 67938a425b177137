// Users and groups as the capsule defines them, read from its /etc/passwd and
// /etc/group (envd runs inside the capsule, so these are the capsule's files).
// Parsed lazily and re-read only when a file changes, so a `useradd` inside the
// capsule is seen at once and a request costs one stat per file.
import fs from 'node:fs';

export interface User {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
  /** Primary gid first, then every group that lists the user as a member. */
  groups: number[];
}

interface Db {
  users: Map<string, User>;
  userNames: Map<number, string>;
  groupNames: Map<number, string>;
}

const files = { passwd: '/etc/passwd', group: '/etc/group' };
let cache: { key: string; db: Db } | undefined;

function fileKey(path: string): string {
  try {
    const st = fs.statSync(path, { bigint: true });
    return `${st.ino}:${st.size}:${st.mtimeNs}`;
  } catch {
    return 'missing';
  }
}

function readLines(path: string): string[][] {
  let text = '';
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const rows: string[][] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    rows.push(line.split(':'));
  }
  return rows;
}

function load(): Db {
  const key = fileKey(files.passwd) + '|' + fileKey(files.group);
  if (cache?.key === key) return cache.db;
  const users = new Map<string, User>();
  const userNames = new Map<number, string>();
  const groupNames = new Map<number, string>();
  const memberOf = new Map<string, number[]>();
  for (const [name, , gidStr, members] of readLines(files.group)) {
    const gid = Number(gidStr);
    if (!name || !Number.isInteger(gid) || gid < 0) continue;
    if (!groupNames.has(gid)) groupNames.set(gid, name);
    for (const member of (members ?? '').split(',')) {
      if (!member) continue;
      const list = memberOf.get(member) ?? [];
      list.push(gid);
      memberOf.set(member, list);
    }
  }
  for (const [name, , uidStr, gidStr, , home, shell] of readLines(files.passwd)) {
    const uid = Number(uidStr);
    const gid = Number(gidStr);
    if (!name || !Number.isInteger(uid) || !Number.isInteger(gid) || uid < 0 || gid < 0) continue;
    if (users.has(name)) continue; // the first entry wins, as with getpwnam
    const groups = [gid, ...(memberOf.get(name) ?? []).filter((g) => g !== gid)];
    users.set(name, { name, uid, gid, home: home || '/', shell: shell || '/bin/sh', groups: [...new Set(groups)] });
    if (!userNames.has(uid)) userNames.set(uid, name);
  }
  const db = { users, userNames, groupNames };
  cache = { key, db };
  return db;
}

export function lookupUser(name: string): User | undefined {
  const user = load().users.get(name);
  // A root file system without a passwd entry for root still has root.
  if (!user && name === 'root') return { name, uid: 0, gid: 0, home: '/root', shell: '/bin/sh', groups: [0] };
  return user;
}

/** Name of a uid, or the number as text when the capsule has no such user. */
export function userName(uid: number): string {
  return load().userNames.get(uid) ?? String(uid);
}

export function groupName(gid: number): string {
  return load().groupNames.get(gid) ?? String(gid);
}
