// The SDK end to end: a real control plane, database and host agent, real
// capsules with envd inside, driven only through @wrenn/sdk.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { startPlatform, type Platform } from '@wrenn/testkit';
import {
  AuthenticationError,
  Capsule,
  ConflictError,
  InvalidArgumentError,
  NotFoundError,
  TimeoutError,
  type ConnectionOpts,
  type FilesystemEvent,
} from '../src/index.js';

let p: Platform;
let conn: ConnectionOpts;
let capsule: Capsule;

before(async () => {
  p = await startPlatform({ prefix: 'sdk', subnetBase: '10.242', agents: 1 });
  conn = { apiKey: p.apiKey, baseUrl: p.baseUrl };
  capsule = await Capsule.create({ ...conn, metadata: { suite: 'sdk', run: 'main' }, timeoutSec: 600 });
});

after(async () => {
  await p?.stop();
});

/** Collects text until `re` matches or the deadline passes. */
function collector() {
  let text = '';
  const waiters: Array<() => void> = [];
  return {
    push(s: string) {
      text += s;
      for (const w of waiters.splice(0)) w();
    },
    get text() {
      return text;
    },
    async waitFor(re: RegExp, ms = 15_000): Promise<string> {
      const deadline = Date.now() + ms;
      while (!re.test(text)) {
        if (Date.now() > deadline)
          throw new Error(`timed out waiting for ${re}; got ${JSON.stringify(text.slice(-500))}`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 200);
        });
      }
      return text;
    },
  };
}

describe('lifecycle', () => {
  test('create gives a running capsule with our settings', async () => {
    assert.match(capsule.id, /^cl-[0-9a-z]{25}$/);
    const info = await capsule.info();
    assert.equal(info.status, 'running');
    assert.equal(info.template, 'minimal');
    assert.equal(info.timeoutSec, 600);
    assert.deepEqual(info.metadata, { suite: 'sdk', run: 'main' });
    assert.ok(info.createdAt instanceof Date && !Number.isNaN(info.createdAt.getTime()));
    assert.equal(await capsule.isRunning(), true);
  });

  test('list shows the capsule and filters by metadata and status', async () => {
    const all = await Capsule.list(conn);
    assert.ok(all.some((c) => c.id === capsule.id));
    const mine = await Capsule.list({ ...conn, metadata: { suite: 'sdk' } });
    assert.deepEqual(
      mine.map((c) => c.id),
      [capsule.id],
    );
    assert.deepEqual(await Capsule.list({ ...conn, metadata: { suite: 'nope' } }), []);
    const paused = await Capsule.list({ ...conn, status: 'paused' });
    assert.ok(!paused.some((c) => c.id === capsule.id));
  });

  test('getHost derives the port-proxy host from the base URL', () => {
    const host = new URL(p.baseUrl).host;
    assert.equal(capsule.getHost(8080), `8080-${capsule.id}.${host}`);
    assert.throws(() => capsule.getHost(0), InvalidArgumentError);
  });

  test('getHost reaches a server in the capsule through the port proxy', async () => {
    await capsule.files.write('/tmp/www/hello.txt', 'served from the capsule\n');
    const server = await capsule.commands.run('python3 -m http.server 8080 --bind 0.0.0.0', {
      background: true,
      cwd: '/tmp/www',
    });
    try {
      const get = () =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const u = new URL(p.baseUrl);
          const req = http.request(
            {
              host: u.hostname,
              port: u.port,
              path: '/hello.txt',
              headers: { host: capsule.getHost(8080), 'x-api-key': p.apiKey },
            },
            (res) => {
              let body = '';
              res.on('data', (d: Buffer) => (body += d.toString()));
              res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
            },
          );
          req.on('error', reject);
          req.end();
        });
      let res = await get();
      for (let i = 0; i < 50 && res.status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 200));
        res = await get();
      }
      assert.deepEqual(res, { status: 200, body: 'served from the capsule\n' });
    } finally {
      await server.kill();
    }
  });

  test('setTimeout changes the idle timeout: the capsule is paused after it, and a paused one keeps the new one', async () => {
    const c = await Capsule.create(conn);
    try {
      const set = await c.setTimeout(2500);
      assert.equal(set.timeoutSec, 3, 'whole seconds, rounded up');
      assert.equal((await c.info()).timeoutSec, 3);
      // Idle from now: the host pauses it and the control plane learns of it.
      const deadline = Date.now() + 30_000;
      let status = (await c.info()).status;
      while (status !== 'paused' && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 250));
        status = (await c.info()).status;
      }
      assert.equal(status, 'paused', 'auto-paused after its new idle timeout');
      // A paused capsule takes a new timeout for when it is resumed: 0 = never paused for idling.
      assert.equal((await c.setTimeout(0)).timeoutSec, 0);
      await c.resume();
      await new Promise((r) => setTimeout(r, 5000));
      assert.equal((await c.info()).status, 'running', 'timeout 0 keeps it running while idle');
      await assert.rejects(c.setTimeout(-1), InvalidArgumentError);
    } finally {
      await c.kill();
    }
    await assert.rejects(
      c.setTimeout(1000),
      (err: unknown) => err instanceof ConflictError && /stopped/.test(err.message),
    );
  });

  test('pause stops exec; connect resumes and files survive', async () => {
    const c = await Capsule.create(conn);
    try {
      await c.files.write('/root/keep.txt', 'still here');
      const paused = await c.pause();
      assert.equal(paused.status, 'paused');
      await assert.rejects(c.commands.run('true'), ConflictError);
      await assert.rejects(Capsule.connect(c.id, { ...conn, autoResume: false }), ConflictError);
      const again = await Capsule.connect(c.id, conn);
      assert.equal((await again.info()).status, 'running');
      assert.equal(await again.files.read('/root/keep.txt'), 'still here');
      // Resuming a running capsule changes nothing.
      assert.equal((await again.resume()).status, 'running');
    } finally {
      assert.equal(await c.kill(), true);
    }
    assert.equal(await c.kill(), false);
    assert.equal(await Capsule.kill(c.id, conn), false);
  });
});

describe('commands', () => {
  test('run collects stdout, stderr and the exit code', async () => {
    const r = await capsule.commands.run('echo out; echo err >&2; exit 3');
    assert.deepEqual(
      { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode },
      { stdout: 'out\n', stderr: 'err\n', exitCode: 3 },
    );
    assert.equal(typeof r.durationMs, 'number');
  });

  test('run honours envs, cwd and argv without a shell', async () => {
    const r = await capsule.commands.run('echo "$GREETING from $(pwd)"', { envs: { GREETING: 'hello' }, cwd: '/tmp' });
    assert.equal(r.stdout, 'hello from /tmp\n');
    const argv = await capsule.commands.run('/bin/echo', { args: ['a b', '$HOME', '*'] });
    assert.equal(argv.stdout, 'a b $HOME *\n');
  });

  test('run with callbacks streams output as it comes', async () => {
    const chunks: string[] = [];
    const errs: string[] = [];
    const r = await capsule.commands.run('for i in 1 2 3; do echo line$i; sleep 0.2; done; echo oops >&2; exit 5', {
      onStdout: (d) => chunks.push(d),
      onStderr: (d) => errs.push(d),
    });
    assert.equal(r.exitCode, 5);
    assert.equal(chunks.join(''), 'line1\nline2\nline3\n');
    assert.ok(chunks.length >= 2, `output arrived in pieces: ${JSON.stringify(chunks)}`);
    assert.equal(errs.join(''), 'oops\n');
    assert.equal(r.stdout, 'line1\nline2\nline3\n');
  });

  test('a command over its timeout fails with TimeoutError', async () => {
    const t0 = Date.now();
    await assert.rejects(capsule.commands.run('sleep 30', { timeoutMs: 1000 }), TimeoutError);
    await assert.rejects(capsule.commands.run('sleep 30', { timeoutMs: 1000, onStdout: () => {} }), TimeoutError);
    assert.ok(Date.now() - t0 < 20_000);
  });

  test('background: handle, list, reconnect by tag, wait, kill', async () => {
    const out = collector();
    const h = await capsule.commands.run('for i in $(seq 1 100); do echo tick$i; sleep 0.1; done', {
      background: true,
      tag: 'ticker',
      onStdout: (d) => out.push(d),
    });
    assert.ok(h.pid > 0);
    assert.equal(h.tag, 'ticker');
    await out.waitFor(/tick2/);

    const listed = await capsule.commands.list();
    assert.ok(
      listed.some((x) => x.pid === h.pid && x.tag === 'ticker'),
      JSON.stringify(listed),
    );

    // A second client attaches by tag and sees output from then on.
    const out2 = collector();
    const h2 = await capsule.commands.connect('ticker', { onStdout: (d) => out2.push(d) });
    assert.equal(h2.pid, h.pid);
    await out2.waitFor(/tick\d+/);
    h2.disconnect();

    assert.equal(await h.kill(), true);
    const res = await h.wait().catch((e: Error) => e);
    // Killed: either an exit with a non-zero code, or the stream ends on the kill.
    if (!(res instanceof Error)) assert.notEqual(res.exitCode, 0);
    assert.equal(await capsule.commands.kill('ticker'), false);
    assert.equal(await capsule.commands.kill(999_999), false);
    await assert.rejects(capsule.commands.connect('no-such-tag'), NotFoundError);
  });

  test('background wait gives the exit code and output', async () => {
    const h = await capsule.commands.run('sleep 1; echo done; exit 4', { background: true });
    const r = await h.wait();
    assert.equal(r.exitCode, 4);
    assert.equal(r.stdout, 'done\n');
    assert.equal(h.exitCode, 4);
  });
});

describe('files', () => {
  test('write and read text and bytes', async () => {
    await capsule.files.write('/tmp/sdk/a/hello.txt', 'hello wörld\n');
    assert.equal(await capsule.files.read('/tmp/sdk/a/hello.txt'), 'hello wörld\n');
    const bin = randomBytes(4096);
    await capsule.files.write('/tmp/sdk/bin', bin);
    assert.deepEqual(Buffer.from(await capsule.files.read('/tmp/sdk/bin', { format: 'bytes' })), bin);
    await assert.rejects(capsule.files.read('/tmp/sdk/missing'), NotFoundError);
  });

  test('streams a 24 MiB file both ways', async () => {
    const size = 24 * 1024 * 1024;
    const hash = createHash('sha256');
    let sent = 0;
    async function* source() {
      while (sent < size) {
        const chunk = randomBytes(Math.min(1024 * 1024, size - sent));
        hash.update(chunk);
        sent += chunk.length;
        yield chunk;
      }
    }
    await capsule.files.write('/tmp/sdk/big.bin', Readable.from(source()));
    const want = hash.digest('hex');
    const stream = await capsule.files.read('/tmp/sdk/big.bin', { format: 'stream' });
    const got = createHash('sha256');
    let n = 0;
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) {
      got.update(chunk);
      n += chunk.length;
    }
    assert.equal(n, size);
    assert.equal(got.digest('hex'), want);
    const r = await capsule.commands.run('sha256sum /tmp/sdk/big.bin');
    assert.equal(r.stdout.split(' ')[0], want);
  });

  test('list, makeDir, exists, remove', async () => {
    assert.equal(await capsule.files.makeDir('/tmp/sdk/d/e'), true);
    assert.equal(await capsule.files.makeDir('/tmp/sdk/d/e'), false);
    await capsule.files.write('/tmp/sdk/d/e/f.txt', 'x');
    const one = await capsule.files.list('/tmp/sdk/d');
    assert.deepEqual(
      one.map((e) => [e.name, e.type]),
      [['e', 'directory']],
    );
    const deep = await capsule.files.list('/tmp/sdk/d', { depth: 2 });
    const f = deep.find((e) => e.name === 'f.txt');
    assert.ok(f, JSON.stringify(deep));
    assert.equal(f.path, '/tmp/sdk/d/e/f.txt');
    assert.equal(f.size, 1);
    assert.equal(f.type, 'file');
    assert.ok(f.modifiedTime instanceof Date);

    assert.equal(await capsule.files.exists('/tmp/sdk/d/e/f.txt'), true);
    assert.equal(await capsule.files.exists('/tmp/sdk/d/e'), true);
    assert.equal(await capsule.files.exists('/'), true);
    assert.equal(await capsule.files.exists('/tmp/sdk/d/nope'), false);
    assert.equal(await capsule.files.exists('/no/such/dir/x'), false);
    await capsule.files.remove('/tmp/sdk/d');
    assert.equal(await capsule.files.exists('/tmp/sdk/d'), false);
    await assert.rejects(capsule.files.list('/tmp/sdk/d', { depth: 0 }), InvalidArgumentError);
  });

  test('watchDir reports changes until stopped; the end of the directory ends the watch', async () => {
    await capsule.files.makeDir('/tmp/sdk-watch/inner');
    const events: FilesystemEvent[] = [];
    let exited: { err?: Error } | undefined;
    const w = await capsule.files.watchDir('/tmp/sdk-watch', (e) => events.push(e), {
      recursive: true,
      onExit: (err) => (exited = { err }),
    });
    await capsule.files.write('/tmp/sdk-watch/inner/new.txt', 'hello');
    const deadline = Date.now() + 15_000;
    while (!events.some((e) => e.name === 'inner/new.txt' && e.type === 'create') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(
      events.some((e) => e.name === 'inner/new.txt' && e.type === 'create'),
      `a create event for inner/new.txt: ${JSON.stringify(events)}`,
    );
    w.stop();
    const before = events.length;
    await capsule.files.write('/tmp/sdk-watch/after-stop.txt', 'x');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(events.length, before, 'nothing after stop()');
    assert.equal(exited, undefined, 'stop() is not an exit');

    // A watch whose directory is removed ends by itself, through onExit.
    const gone = await capsule.files.watch('/tmp/sdk-watch/inner', () => {}, { onExit: (err) => (exited = { err }) });
    await capsule.files.remove('/tmp/sdk-watch/inner');
    const until = Date.now() + 15_000;
    while (!exited && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    assert.ok(exited, 'onExit called when the watched directory went away');
    gone.stop();
    await assert.rejects(
      capsule.files.watchDir('/tmp/sdk-watch/none', () => {}),
      NotFoundError,
    );
    await assert.rejects(
      capsule.files.watchDir('', () => {}),
      InvalidArgumentError,
    );
  });
});

describe('pty', () => {
  test('type, resize, reconnect by tag, kill', async () => {
    const out = collector();
    const t = await capsule.pty.create({ cols: 100, rows: 30, onData: (d) => out.push(Buffer.from(d).toString()) });
    assert.match(t.tag, /\S/);
    assert.ok((t.pid ?? 0) > 0);
    t.sendInput('echo hi-$((2+3))\n');
    await out.waitFor(/hi-5/);
    t.sendInput('stty size\n');
    await out.waitFor(/30 100/);
    t.resize({ cols: 120, rows: 40 });
    t.sendInput('stty size\n');
    await out.waitFor(/40 120/);
    assert.throws(() => t.resize({ cols: 0, rows: 10 }), InvalidArgumentError);
    t.disconnect();

    const out2 = collector();
    const t2 = await capsule.pty.connect(t.tag, { onData: (d) => out2.push(Buffer.from(d).toString()) });
    t2.sendInput('echo back-$((6*7))\n');
    await out2.waitFor(/back-42/);
    t2.kill();
    const { exitCode } = await t2.wait();
    assert.notEqual(exitCode, 0);
  });

  test('exit code of the shell comes back', async () => {
    const t = await capsule.pty.create({ cmd: '/bin/bash', args: ['-c', 'exit 7'] });
    assert.deepEqual(await t.wait(), { exitCode: 7 });
  });
});

describe('errors', () => {
  test('unknown and foreign capsules are NotFound', async () => {
    const unknown = 'cl-' + '0'.repeat(24) + '1';
    await assert.rejects(Capsule.connect(unknown, conn), NotFoundError);
    await assert.rejects(Capsule.getInfo(unknown, conn), NotFoundError);
    assert.equal(await Capsule.kill(unknown, conn), false);

    const other = await p.newTeam();
    const theirs = { apiKey: other.apiKey, baseUrl: p.baseUrl };
    await assert.rejects(Capsule.connect(capsule.id, theirs), NotFoundError);
    const foreign = Capsule.attach(capsule.id, theirs);
    await assert.rejects(foreign.commands.run('true'), NotFoundError);
    await assert.rejects(foreign.files.read('/etc/hostname'), NotFoundError);
    await assert.rejects(foreign.pty.create(), NotFoundError);
    assert.equal(await Capsule.kill(capsule.id, theirs), false);
    assert.equal(await capsule.isRunning(), true);
  });

  test('listTemplates: the built-in minimal template, filtered by type', async () => {
    const all = await Capsule.listTemplates(conn);
    const minimal = all.find((t) => t.name === 'minimal');
    assert.equal(minimal?.type, 'base');
    assert.equal(minimal?.platform, true);
    assert.ok(minimal?.createdAt instanceof Date);
    const snapshots = await Capsule.listTemplates({ ...conn, type: 'snapshot' });
    assert.ok(snapshots.every((t) => t.type === 'snapshot'));
  });

  test('bad key, bad input, unreachable server', async () => {
    await assert.rejects(Capsule.list({ apiKey: 'wrn_' + '0'.repeat(32), baseUrl: p.baseUrl }), AuthenticationError);
    await assert.rejects(
      Capsule.create({ ...conn, vcpus: 0 }),
      (e: unknown) => e instanceof InvalidArgumentError && e.status === 400 && /vcpus/.test(e.message),
    );
    await assert.rejects(Capsule.create({ ...conn, template: 'no-such-template' }), NotFoundError);
    await assert.rejects(
      Capsule.list({ apiKey: 'k', baseUrl: 'http://127.0.0.1:1' }),
      (e: unknown) => e instanceof Error && (e as { code?: string }).code === 'connection_failed',
    );
  });
});
