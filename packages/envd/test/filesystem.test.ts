// filesystem.Filesystem against a real envd child process, through real Connect clients.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Code, ConnectError } from '@connectrpc/connect';
import { EventType, FileType, type FilesystemEvent } from '@wrenn/contracts/gen/filesystem/filesystem_pb';
import {
  as,
  clients,
  createUser,
  startEnvd,
  tempDir,
  waitFor,
  type Clients,
  type Envd,
  type TestUser,
} from './helpers.js';

async function rejectsWith(p: Promise<unknown>, code: Code, re?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ConnectError, `expected ConnectError, got ${String(err)}`);
    assert.equal(Code[err.code], Code[code], err.message);
    if (re) assert.match(err.message, re);
    return true;
  });
}

const ev = (e: FilesystemEvent) => `${EventType[e.type]} ${e.name}`;

describe('envd filesystem service', () => {
  let envd: Envd;
  let c: Clients;
  let user: TestUser;
  let tmp: string;

  before(async () => {
    envd = await startEnvd(['--keepalive-ms', '100']);
    c = clients(envd.baseUrl);
    user = createUser();
    tmp = tempDir();
    fs.chmodSync(tmp, 0o755);
  });

  after(async () => {
    await envd.stop();
    user.remove();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('stats files, directories and symlinks', async () => {
    const file = path.join(tmp, 'stat.sh');
    fs.writeFileSync(file, 'echo hi\n');
    fs.chmodSync(file, 0o754);
    fs.chownSync(file, user.uid, user.extraGid);
    const when = new Date('2024-05-06T07:08:09.250Z');
    fs.utimesSync(file, when, when);
    const { entry } = await c.fs.stat({ path: file });
    assert.ok(entry);
    assert.equal(entry.name, 'stat.sh');
    assert.equal(entry.type, FileType.FILE);
    assert.equal(entry.path, file);
    assert.equal(entry.size, 8n);
    assert.equal(entry.mode, 0o754);
    assert.equal(entry.permissions, '-rwxr-xr--');
    assert.equal(entry.owner, user.name);
    assert.equal(entry.group, user.extraGroup);
    assert.equal(entry.modifiedTime?.seconds, BigInt(Math.floor(when.getTime() / 1000)));
    assert.equal(entry.modifiedTime?.nanos, 250_000_000);
    assert.equal(entry.symlinkTarget, undefined);

    const dir = await c.fs.stat({ path: tmp });
    assert.equal(dir.entry?.type, FileType.DIRECTORY);
    assert.match(dir.entry?.permissions ?? '', /^drwxr-xr-x$/);

    const link = path.join(tmp, 'link');
    fs.symlinkSync('stat.sh', link);
    const l = await c.fs.stat({ path: link });
    assert.equal(l.entry?.type, FileType.SYMLINK);
    assert.equal(l.entry?.symlinkTarget, file);
    assert.equal(l.entry?.permissions, 'lrwxrwxrwx');

    await rejectsWith(c.fs.stat({ path: path.join(tmp, 'missing') }), Code.NotFound, /missing/);
  });

  it('lists directories to the requested depth', async () => {
    const root = path.join(tmp, 'tree');
    fs.mkdirSync(path.join(root, 'a/b/c'), { recursive: true });
    fs.writeFileSync(path.join(root, 'top.txt'), 'x');
    fs.writeFileSync(path.join(root, 'a/mid.txt'), 'x');
    fs.writeFileSync(path.join(root, 'a/b/c/deep.txt'), 'x');
    fs.symlinkSync(path.join(root, 'a'), path.join(root, 'loop'));
    const names = async (depth: number) =>
      (await c.fs.listDir({ path: root, depth })).entries.map((e) => path.relative(root, e.path));
    assert.deepEqual(await names(0), ['a', 'loop', 'top.txt']);
    assert.deepEqual(await names(1), ['a', 'loop', 'top.txt']);
    assert.deepEqual(await names(2), ['a', 'a/b', 'a/mid.txt', 'loop', 'top.txt']);
    assert.deepEqual(await names(10), ['a', 'a/b', 'a/b/c', 'a/b/c/deep.txt', 'a/mid.txt', 'loop', 'top.txt']);
    const entries = (await c.fs.listDir({ path: root })).entries;
    assert.equal(entries.find((e) => e.name === 'loop')?.type, FileType.SYMLINK);
    assert.equal(entries.find((e) => e.name === 'a')?.type, FileType.DIRECTORY);
    await rejectsWith(c.fs.listDir({ path: path.join(root, 'top.txt') }), Code.InvalidArgument, /not a directory/);
    await rejectsWith(c.fs.listDir({ path: path.join(root, 'nope') }), Code.NotFound);
  });

  it('makes directories with parents, owned by the requesting user', async () => {
    const base = path.join(tmp, 'mk');
    fs.mkdirSync(base);
    fs.chownSync(base, user.uid, user.gid);
    const target = path.join(base, 'x/y/z');
    const r = await c.fs.makeDir({ path: target }, as(user.name));
    assert.equal(r.entry?.type, FileType.DIRECTORY);
    assert.equal(r.entry?.path, target);
    for (const p of ['x', 'x/y', 'x/y/z']) {
      const st = fs.statSync(path.join(base, p));
      assert.equal(st.uid, user.uid, p);
      assert.equal(st.gid, user.gid, p);
    }
    await rejectsWith(c.fs.makeDir({ path: target }, as(user.name)), Code.AlreadyExists);
    fs.writeFileSync(path.join(base, 'file'), '');
    await rejectsWith(c.fs.makeDir({ path: path.join(base, 'file') }), Code.InvalidArgument);
  });

  it('refuses what the user may not do, and changes nothing', async () => {
    const secret = path.join('/root', `wrenn-envd-test-${process.pid}`);
    await rejectsWith(c.fs.makeDir({ path: secret }, as(user.name)), Code.PermissionDenied, /permission denied/);
    assert.equal(fs.existsSync(secret), false);
    fs.mkdirSync(secret);
    try {
      fs.writeFileSync(path.join(secret, 'f'), 'root only');
      await rejectsWith(c.fs.stat({ path: path.join(secret, 'f') }, as(user.name)), Code.PermissionDenied);
      await rejectsWith(c.fs.listDir({ path: '/root' }, as(user.name)), Code.PermissionDenied);
      await rejectsWith(c.fs.remove({ path: path.join(secret, 'f') }, as(user.name)), Code.PermissionDenied);
      const mine = path.join(user.home, 'mine');
      fs.writeFileSync(mine, 'x');
      fs.chownSync(mine, user.uid, user.gid);
      await rejectsWith(
        c.fs.move({ source: mine, destination: path.join(secret, 'stolen') }, as(user.name)),
        Code.PermissionDenied,
      );
      assert.ok(fs.existsSync(mine));
      assert.ok(fs.existsSync(path.join(secret, 'f')));
      assert.equal(fs.existsSync(path.join(secret, 'stolen')), false);
      // A tree of the user's holding a directory the user may not empty.
      const tree = path.join(user.home, 'tree');
      fs.mkdirSync(path.join(tree, 'locked'), { recursive: true });
      fs.writeFileSync(path.join(tree, 'locked/root-file'), 'x');
      fs.chownSync(tree, user.uid, user.gid);
      await rejectsWith(c.fs.remove({ path: tree }, as(user.name)), Code.PermissionDenied, /Permission denied/);
      assert.ok(fs.existsSync(path.join(tree, 'locked/root-file')));
      // Root itself may.
      await c.fs.stat({ path: path.join(secret, 'f') });
      await c.fs.remove({ path: tree });
      assert.equal(fs.existsSync(tree), false);
    } finally {
      fs.rmSync(secret, { recursive: true, force: true });
    }
  });

  it('resolves relative and ~ paths against the user home', async () => {
    fs.writeFileSync(path.join(user.home, 'rel.txt'), 'x');
    assert.equal((await c.fs.stat({ path: 'rel.txt' }, as(user.name))).entry?.path, path.join(user.home, 'rel.txt'));
    assert.equal((await c.fs.stat({ path: '~/rel.txt' }, as(user.name))).entry?.path, path.join(user.home, 'rel.txt'));
    assert.equal((await c.fs.stat({ path: '' }, as(user.name))).entry?.path, user.home);
    // `..` goes where the user may go; nothing is jailed, nothing is escalated.
    assert.equal(
      (await c.fs.stat({ path: '../../../../../../etc/hostname' }, as(user.name))).entry?.path,
      '/etc/hostname',
    );
    await rejectsWith(c.fs.stat({ path: '~root/x' }, as(user.name)), Code.InvalidArgument);
  });

  it('moves files and directories, creating destination parents', async () => {
    const src = path.join(tmp, 'mv-src');
    fs.mkdirSync(path.join(src, 'inner'), { recursive: true });
    fs.writeFileSync(path.join(src, 'inner/f'), 'data');
    const dst = path.join(tmp, 'mv/new/place');
    const r = await c.fs.move({ source: src, destination: dst });
    assert.equal(r.entry?.path, dst);
    assert.equal(r.entry?.type, FileType.DIRECTORY);
    assert.equal(fs.readFileSync(path.join(dst, 'inner/f'), 'utf8'), 'data');
    assert.equal(fs.existsSync(src), false);
    await rejectsWith(c.fs.move({ source: src, destination: dst + '2' }), Code.NotFound);
  });

  it('moves across file systems (copy, then remove)', async () => {
    const shm = fs.mkdtempSync('/dev/shm/wrenn-envd-test-');
    try {
      const src = path.join(shm, 'f');
      fs.writeFileSync(src, 'across');
      const dst = path.join(tmp, 'across/f');
      await c.fs.move({ source: src, destination: dst });
      assert.equal(fs.readFileSync(dst, 'utf8'), 'across');
      assert.equal(fs.existsSync(src), false);
    } finally {
      fs.rmSync(shm, { recursive: true, force: true });
    }
  });

  it('removes files and whole trees', async () => {
    const dir = path.join(tmp, 'rm');
    fs.mkdirSync(path.join(dir, 'a/b'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'a/b/f'), 'x');
    await c.fs.remove({ path: path.join(dir, 'a/b/f') });
    assert.equal(fs.existsSync(path.join(dir, 'a/b/f')), false);
    await c.fs.remove({ path: dir });
    assert.equal(fs.existsSync(dir), false);
    await rejectsWith(c.fs.remove({ path: dir }), Code.NotFound);
  });

  it('streams directory events with WatchDir (recursive, relative names, keepalives)', async () => {
    const root = path.join(tmp, 'watch');
    fs.mkdirSync(path.join(root, 'existing'), { recursive: true });
    const ac = new AbortController();
    const events: FilesystemEvent[] = [];
    let started = false;
    let keepalives = 0;
    const done = (async () => {
      try {
        for await (const m of c.fs.watchDir(
          { path: root, recursive: true, includeEntry: true },
          { signal: ac.signal },
        )) {
          if (m.event.case === 'start') started = true;
          if (m.event.case === 'keepalive') keepalives++;
          if (m.event.case === 'filesystem') events.push(m.event.value);
        }
      } catch (err) {
        if (!ac.signal.aborted) throw err;
      }
    })();
    await waitFor(() => started, 5000, 'watch start');
    const has = (s: string) => events.some((e) => ev(e) === s);

    fs.writeFileSync(path.join(root, 'new.txt'), 'hello');
    await waitFor(() => has('CREATE new.txt') && has('WRITE new.txt'), 5000, 'create+write');
    const created = events.find((e) => ev(e) === 'CREATE new.txt');
    assert.equal(created?.entry?.path, path.join(root, 'new.txt'));
    fs.chmodSync(path.join(root, 'new.txt'), 0o600);
    await waitFor(() => has('CHMOD new.txt'), 5000, 'chmod');
    fs.renameSync(path.join(root, 'new.txt'), path.join(root, 'renamed.txt'));
    await waitFor(() => has('RENAME new.txt') && has('CREATE renamed.txt'), 5000, 'rename');
    fs.writeFileSync(path.join(root, 'existing/sub.txt'), 'x');
    await waitFor(() => has('CREATE existing/sub.txt'), 5000, 'event in an existing subdirectory');
    fs.mkdirSync(path.join(root, 'fresh'));
    await waitFor(() => has('CREATE fresh'), 5000, 'mkdir');
    fs.writeFileSync(path.join(root, 'fresh/inside.txt'), 'x');
    await waitFor(() => has('CREATE fresh/inside.txt'), 5000, 'event in a new subdirectory');
    fs.rmSync(path.join(root, 'renamed.txt'));
    await waitFor(() => has('REMOVE renamed.txt'), 5000, 'remove');
    await waitFor(() => keepalives > 0, 5000, 'keepalive');
    ac.abort();
    await done;
    assert.ok(!events.some((e) => e.name.startsWith('/') || e.name.startsWith('..')), 'names must be relative');
  });

  it('WatchDir without recursive ignores subdirectories; bad paths are refused', async () => {
    const root = path.join(tmp, 'watch-flat');
    fs.mkdirSync(path.join(root, 'sub'), { recursive: true });
    const ac = new AbortController();
    const events: FilesystemEvent[] = [];
    let started = false;
    const done = (async () => {
      try {
        for await (const m of c.fs.watchDir({ path: root }, { signal: ac.signal })) {
          if (m.event.case === 'start') started = true;
          if (m.event.case === 'filesystem') events.push(m.event.value);
        }
      } catch (err) {
        if (!ac.signal.aborted) throw err;
      }
    })();
    await waitFor(() => started, 5000, 'watch start');
    fs.writeFileSync(path.join(root, 'sub/deep.txt'), 'x');
    fs.writeFileSync(path.join(root, 'top.txt'), 'x');
    await waitFor(() => events.some((e) => ev(e) === 'CREATE top.txt'), 5000, 'top-level event');
    ac.abort();
    await done;
    assert.ok(!events.some((e) => e.name.includes('deep')), events.map(ev).join(', '));

    const drain = async (p: AsyncIterable<unknown>) => {
      for await (const _ of p) {
        // nothing
      }
    };
    await rejectsWith(drain(c.fs.watchDir({ path: path.join(root, 'nope') })), Code.NotFound);
    await rejectsWith(drain(c.fs.watchDir({ path: path.join(root, 'top.txt') })), Code.InvalidArgument);
    await rejectsWith(drain(c.fs.watchDir({ path: '/root' }, as(user.name))), Code.PermissionDenied);
  });

  it('buffers events for polling watchers and drains them on read', async () => {
    const root = path.join(tmp, 'poll');
    fs.mkdirSync(root);
    const { watcherId } = await c.fs.createWatcher({ path: root, recursive: true });
    assert.ok(watcherId);
    fs.writeFileSync(path.join(root, 'a.txt'), 'x');
    fs.mkdirSync(path.join(root, 'd'));
    const seen: string[] = [];
    await waitFor(
      async () => {
        seen.push(...(await c.fs.getWatcherEvents({ watcherId })).events.map(ev));
        return seen.includes('CREATE a.txt') && seen.includes('CREATE d');
      },
      5000,
      'polled events',
    );
    assert.deepEqual((await c.fs.getWatcherEvents({ watcherId })).events, []);
    fs.rmSync(path.join(root, 'a.txt'));
    await waitFor(
      async () => (await c.fs.getWatcherEvents({ watcherId })).events.some((e) => ev(e) === 'REMOVE a.txt'),
      5000,
      'remove event',
    );
    await c.fs.removeWatcher({ watcherId });
    await rejectsWith(c.fs.getWatcherEvents({ watcherId }), Code.NotFound);
    await rejectsWith(c.fs.removeWatcher({ watcherId }), Code.NotFound);
    await rejectsWith(c.fs.createWatcher({ path: path.join(root, 'nope') }), Code.NotFound);
  });
});
