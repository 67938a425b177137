// envd's plain HTTP routes (/health, /metrics, /envs, /init, /files) on a real envd process.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import { Code, ConnectError } from '@connectrpc/connect';
import { as, clients, collect, createUser, startEnvd, tempDir, type Envd, type TestUser } from './helpers.js';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function request(
  envd: Envd,
  method: string,
  pathAndQuery: string,
  opts: { headers?: Record<string, string>; body?: Buffer | Readable } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${envd.baseUrl}${pathAndQuery}`, { method, headers: opts.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (opts.body instanceof Readable) opts.body.pipe(req);
    else req.end(opts.body);
  });
}

/** A multipart/form-data body, streamed part by part. */
function multipart(parts: Array<{ filename?: string; field?: string; data: Buffer | (() => AsyncIterable<Buffer>) }>) {
  const boundary = '----envdtest' + randomBytes(8).toString('hex');
  async function* gen() {
    for (const p of parts) {
      const fn = p.filename === undefined ? '' : `; filename="${p.filename}"`;
      yield Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${p.field ?? 'file'}"${fn}\r\n` +
          'Content-Type: application/octet-stream\r\n\r\n',
      );
      if (Buffer.isBuffer(p.data)) yield p.data;
      else yield* p.data();
      yield Buffer.from('\r\n');
    }
    yield Buffer.from(`--${boundary}--\r\n`);
  }
  return { contentType: `multipart/form-data; boundary=${boundary}`, body: Readable.from(gen()) };
}

function q(params: Record<string, string>): string {
  return '?' + new URLSearchParams(params).toString();
}

function json(r: Reply): unknown {
  return JSON.parse(r.body.toString());
}

function vmKb(pid: number, field: string): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
}

describe('envd HTTP routes', () => {
  let envd: Envd;
  let user: TestUser;
  let tmp: string;

  before(async () => {
    envd = await startEnvd();
    user = createUser();
    tmp = tempDir();
    fs.chmodSync(tmp, 0o755);
  });

  after(async () => {
    await envd.stop();
    user.remove();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('GET /health answers 204 with no body', async () => {
    const r = await request(envd, 'GET', '/health');
    assert.equal(r.status, 204);
    assert.equal(r.body.length, 0);
  });

  it('survives garbage on the port and bad RPC bodies', async () => {
    const send = (bytes: Buffer) =>
      new Promise<void>((resolve) => {
        const sock = net.connect(envd.port, '127.0.0.1', () => sock.end(bytes));
        sock.on('error', () => resolve());
        sock.on('close', () => resolve());
        sock.resume();
        setTimeout(() => sock.destroy(), 500);
      });
    await send(Buffer.from('\x00\x01garbage\r\n\r\n'));
    await send(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), randomBytes(64)]));
    await send(Buffer.from('PR'));
    const bad = await request(envd, 'POST', '/process.Process/List', {
      headers: { 'content-type': 'application/json' },
      body: Buffer.from('{not json'),
    });
    assert.equal(bad.status, 400);
    const unknown = await request(envd, 'POST', '/process.Process/Nope', {
      headers: { 'content-type': 'application/json' },
      body: Buffer.from('{}'),
    });
    assert.equal(unknown.status, 404);
    assert.equal((await request(envd, 'GET', '/health')).status, 204);
    assert.equal(envd.child.exitCode, null);
  });

  it('GET /metrics reports the machine', async () => {
    const r = await request(envd, 'GET', '/metrics');
    assert.equal(r.status, 200);
    const m = json(r) as Record<string, number>;
    for (const k of [
      'ts',
      'cpu_count',
      'cpu_used_pct',
      'mem_total',
      'mem_used',
      'mem_total_mib',
      'mem_used_mib',
      'disk_used',
      'disk_total',
    ]) {
      assert.equal(typeof m[k], 'number', k);
    }
    assert.ok(Math.abs((m.ts as number) - Date.now() / 1000) < 10);
    assert.ok((m.cpu_count as number) >= 1);
    assert.ok((m.cpu_used_pct as number) >= 0 && (m.cpu_used_pct as number) <= 100);
    assert.ok((m.mem_used as number) > 0 && (m.mem_used as number) <= (m.mem_total as number));
    assert.equal(m.mem_total_mib, Math.floor((m.mem_total as number) / 1048576));
    assert.ok((m.disk_used as number) > 0 && (m.disk_used as number) <= (m.disk_total as number));
  });

  it('uploads multipart files as the user, named by filename, and downloads them', async () => {
    const a = randomBytes(1000);
    const b = Buffer.from('second file\n');
    const mp = multipart([
      { filename: 'up/a.bin', data: a },
      { filename: 'b.txt', data: b },
    ]);
    const r = await request(envd, 'POST', '/files' + q({ username: user.name }), {
      headers: { 'content-type': mp.contentType },
      body: mp.body,
    });
    assert.equal(r.status, 200, r.body.toString());
    assert.deepEqual(json(r), [
      { path: path.join(user.home, 'up/a.bin'), name: 'a.bin', type: 'file' },
      { path: path.join(user.home, 'b.txt'), name: 'b.txt', type: 'file' },
    ]);
    for (const p of ['up', 'up/a.bin', 'b.txt']) {
      const st = fs.statSync(path.join(user.home, p));
      assert.equal(st.uid, user.uid, p);
      assert.equal(st.gid, user.gid, p);
    }
    assert.ok(fs.readFileSync(path.join(user.home, 'up/a.bin')).equals(a));

    const d = await request(envd, 'GET', '/files' + q({ path: 'up/a.bin', username: user.name }));
    assert.equal(d.status, 200);
    assert.equal(d.headers['content-type'], 'application/octet-stream');
    assert.equal(d.headers['content-length'], '1000');
    assert.match(String(d.headers['content-disposition']), /filename="a\.bin"/);
    assert.ok(d.body.equals(a));
  });

  it('uploads to an explicit path, creating parents owned by the user, and overwrites', async () => {
    const target = path.join(user.home, 'deep/er/file.txt');
    const mp = multipart([{ filename: 'ignored.txt', data: Buffer.from('one') }]);
    let r = await request(envd, 'POST', '/files' + q({ path: target, username: user.name }), {
      headers: { 'content-type': mp.contentType },
      body: mp.body,
    });
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(fs.readFileSync(target, 'utf8'), 'one');
    assert.equal(fs.statSync(path.join(user.home, 'deep')).uid, user.uid);
    // Raw body upload replaces the content.
    r = await request(envd, 'POST', '/files' + q({ path: target, username: user.name }), {
      headers: { 'content-type': 'application/octet-stream' },
      body: Buffer.from('two'),
    });
    assert.equal(r.status, 200, r.body.toString());
    assert.deepEqual(json(r), [{ path: target, name: 'file.txt', type: 'file' }]);
    assert.equal(fs.readFileSync(target, 'utf8'), 'two');
    // gzip-encoded body.
    r = await request(envd, 'POST', '/files' + q({ path: target, username: user.name }), {
      headers: { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' },
      body: gzipSync(Buffer.from('three')),
    });
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(fs.readFileSync(target, 'utf8'), 'three');
  });

  it('serves the HTTP routes over h2c too', async () => {
    const session = http2.connect(envd.baseUrl);
    try {
      const call = (headers: http2.OutgoingHttpHeaders, body?: Buffer) =>
        new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
          const st = session.request(headers);
          const chunks: Buffer[] = [];
          let status = 0;
          st.on('response', (h) => (status = Number(h[':status'])));
          st.on('data', (d: Buffer) => chunks.push(d));
          st.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
          st.on('error', reject);
          st.end(body);
        });
      assert.equal((await call({ ':path': '/health' })).status, 204);
      const target = path.join(tmp, 'h2.bin');
      const data = randomBytes(200_000);
      const up = await call(
        { ':method': 'POST', ':path': '/files' + q({ path: target }), 'content-type': 'application/octet-stream' },
        data,
      );
      assert.equal(up.status, 200, up.body.toString());
      const down = await call({ ':path': '/files' + q({ path: target }) });
      assert.equal(down.status, 200);
      assert.ok(down.body.equals(data));
      assert.equal((await call({ ':path': '/files' + q({ path: path.join(tmp, 'nope') }) })).status, 404);
    } finally {
      session.close();
    }
  });

  it('answers 404, 400 and 403 as the user would see them', async () => {
    const missing = await request(envd, 'GET', '/files' + q({ path: path.join(tmp, 'nope') }));
    assert.equal(missing.status, 404);
    const body = json(missing) as { code: number; message: string };
    assert.equal(body.code, 404);
    assert.match(body.message, /nope/);
    assert.equal((await request(envd, 'GET', '/files' + q({ path: tmp }))).status, 400);
    assert.equal((await request(envd, 'GET', '/files')).status, 400);
    assert.equal((await request(envd, 'GET', '/files' + q({ path: 'x', username: 'no-such-user-xyz' }))).status, 401);

    // Traversal resolves like a shell would, then the kernel decides.
    const ok = await request(
      envd,
      'GET',
      '/files' + q({ path: '../../../../../../etc/hostname', username: user.name }),
    );
    assert.equal(ok.status, 200);
    assert.ok(ok.body.equals(fs.readFileSync('/etc/hostname')));
    const secret = `/root/wrenn-envd-secret-${process.pid}`;
    fs.writeFileSync(secret, 'root only');
    try {
      const denied = await request(
        envd,
        'GET',
        '/files' + q({ path: `../../../../../..${secret}`, username: user.name }),
      );
      assert.equal(denied.status, 403);
      assert.doesNotMatch(denied.body.toString(), /root only/);
      assert.equal((await request(envd, 'GET', '/files' + q({ path: secret }))).status, 200);
    } finally {
      fs.rmSync(secret, { force: true });
    }
    const evil = `/etc/wrenn-envd-evil-${process.pid}`;
    const up = await request(envd, 'POST', '/files' + q({ path: evil, username: user.name }), {
      headers: { 'content-type': 'application/octet-stream' },
      body: Buffer.from('x'),
    });
    assert.equal(up.status, 403, up.body.toString());
    assert.equal(fs.existsSync(evil), false);
    // Writing over a directory is refused.
    const dirUp = await request(envd, 'POST', '/files' + q({ path: tmp }), {
      headers: { 'content-type': 'application/octet-stream' },
      body: Buffer.from('x'),
    });
    assert.equal(dirUp.status, 400);
    // The same target twice in one upload is refused.
    const dup = multipart([
      { filename: 'dup.txt', data: Buffer.from('1') },
      { filename: 'dup.txt', data: Buffer.from('2') },
    ]);
    const dupR = await request(envd, 'POST', '/files' + q({ username: user.name }), {
      headers: { 'content-type': dup.contentType },
      body: dup.body,
    });
    assert.equal(dupR.status, 400);
  });

  it('streams a 100 MiB upload and download without holding it in memory', async (t) => {
    const size = 100 * 1024 * 1024;
    const chunk = randomBytes(64 * 1024);
    const hash = createHash('sha256');
    for (let i = 0; i < size / chunk.length; i++) hash.update(chunk);
    const digest = hash.digest('hex');
    const target = path.join(tmp, 'big.bin');
    const pid = envd.child.pid as number;
    // Warm up (code paths, buffer pools) so the figure shows what the transfer itself holds.
    const warm = randomBytes(4 * 1024 * 1024);
    const w = await request(envd, 'POST', '/files' + q({ path: target }), { body: warm });
    assert.equal(w.status, 200);
    assert.ok((await request(envd, 'GET', '/files' + q({ path: target }))).body.equals(warm));
    const before = vmKb(pid, 'VmRSS');
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5'); // resets VmHWM (peak RSS)
    const mp = multipart([
      {
        filename: 'big.bin',
        data: async function* () {
          for (let i = 0; i < size / chunk.length; i++) yield chunk;
        },
      },
    ]);
    const r = await request(envd, 'POST', '/files' + q({ path: target }), {
      headers: { 'content-type': mp.contentType },
      body: mp.body,
    });
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(fs.statSync(target).size, size);

    const got = createHash('sha256');
    let n = 0;
    await new Promise<void>((resolve, reject) => {
      http
        .get(`${envd.baseUrl}/files${q({ path: target })}`, (res) => {
          assert.equal(res.headers['content-length'], String(size));
          res.on('data', (d: Buffer) => {
            n += d.length;
            got.update(d);
          });
          res.on('end', resolve);
          res.on('error', reject);
        })
        .on('error', reject);
    });
    assert.equal(n, size);
    assert.equal(got.digest('hex'), digest);
    const grownKb = vmKb(pid, 'VmHWM') - before;
    t.diagnostic(`envd peak RSS growth: ${grownKb} KiB`);
    // What remains is garbage-collector slack (about 28 MiB): it does not grow with the file (300 MiB measured the same).
    assert.ok(grownKb < 40 * 1024, `envd peak RSS grew by ${grownKb} KiB for 100 MiB up and down`);
  });

  it('answers 507 when the disk is full and leaves no partial file', async (t) => {
    const mnt = path.join(tmp, 'small');
    fs.mkdirSync(mnt);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    } catch {
      t.skip('cannot mount tmpfs here');
      return;
    }
    try {
      // 32 MiB into 1 MiB, streamed: envd answers 507 (and drains the rest) instead of resetting.
      const chunk = randomBytes(1024 * 1024);
      const big = () =>
        (async function* () {
          for (let i = 0; i < 32; i++) yield chunk;
        })();
      const target = path.join(mnt, 'too-big.bin');
      const r = await request(envd, 'POST', '/files' + q({ path: target }), {
        headers: { 'content-type': 'application/octet-stream' },
        body: Readable.from(big()),
      });
      assert.equal(r.status, 507, r.body.toString());
      assert.match((json(r) as { message: string }).message, /no space/);
      assert.equal(fs.existsSync(target), false);
      const mp = multipart([{ filename: 'too-big.bin', data: big }]);
      const m = await request(envd, 'POST', '/files' + q({ path: target }), {
        headers: { 'content-type': mp.contentType },
        body: mp.body,
      });
      assert.equal(m.status, 507, m.body.toString());
      assert.equal(fs.existsSync(target), false);
      // A broken gzip body is the client's fault.
      const gz = await request(envd, 'POST', '/files' + q({ path: path.join(tmp, 'gz.txt') }), {
        headers: { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' },
        body: Buffer.from('not gzip at all'),
      });
      assert.equal(gz.status, 400, gz.body.toString());
      assert.equal(fs.existsSync(path.join(tmp, 'gz.txt')), false);
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});

describe('envd /init', () => {
  let envd: Envd;
  let user: TestUser;
  const capsuleEnv = { WRENN_SANDBOX: 'true', WRENN_SANDBOX_ID: 'cl-envdtest' };

  before(async () => {
    // The test runner's own WRENN_TEST_* variables must not leak into envd's /envs.
    const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('WRENN_')));
    envd = await startEnvd([], undefined, { ...inherited, ...capsuleEnv });
    user = createUser();
  });

  after(async () => {
    await envd.stop();
    user.remove();
  });

  const init = (body: unknown, token?: string) =>
    request(envd, 'POST', '/init', {
      headers: { 'content-type': 'application/json', ...(token ? { 'x-access-token': token } : {}) },
      body: Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)),
    });

  it('rejects bad bodies and changes nothing', async () => {
    assert.equal((await init('{not json')).status, 400);
    assert.equal((await init([1, 2])).status, 400);
    assert.equal((await init({ envVars: { A: 1 } })).status, 400);
    const r = await init({ envVars: { SHOULD_NOT: 'apply' }, defaultUser: 'no-such-user-xyz' });
    assert.equal(r.status, 400);
    assert.match((json(r) as { message: string }).message, /no-such-user-xyz/);
    assert.equal((await init({ defaultWorkdir: 'relative/dir' })).status, 400);
    // Only envd's own WRENN_* variables: nothing from the refused requests.
    assert.deepEqual(json(await request(envd, 'GET', '/envs')), capsuleEnv);
  });

  it('applies env vars, default user and default workdir to later processes and file ops', async () => {
    const work = path.join(user.home, 'work');
    fs.mkdirSync(work);
    fs.chownSync(work, user.uid, user.gid);
    const r = await init({
      envVars: { WRENN_A: 'one', WRENN_B: 'two' },
      defaultUser: user.name,
      defaultWorkdir: work,
      timestamp: new Date().toISOString(),
    });
    assert.equal(r.status, 204);
    assert.deepEqual(json(await request(envd, 'GET', '/envs')), { ...capsuleEnv, WRENN_A: 'one', WRENN_B: 'two' });
    const c = clients(envd.baseUrl);
    const p = await collect(
      c.process.start({
        process: {
          cmd: 'sh',
          args: ['-c', 'id -un; pwd; echo "$WRENN_A $WRENN_B $HOME $WRENN_SANDBOX_ID"'],
          envs: { WRENN_B: 'override' },
        },
      }),
    );
    assert.equal(p.stdout.toString(), `${user.name}\n${work}\none override ${user.home} cl-envdtest\n`);
    // File operations act as the default user, relative to the workdir.
    const made = await c.fs.makeDir({ path: 'made-by-default' });
    assert.equal(made.entry?.path, path.join(work, 'made-by-default'));
    assert.equal(fs.statSync(path.join(work, 'made-by-default')).uid, user.uid);
    const up = await request(envd, 'POST', '/files' + q({ path: 'up.txt' }), {
      headers: { 'content-type': 'application/octet-stream' },
      body: Buffer.from('x'),
    });
    assert.equal(up.status, 200, up.body.toString());
    assert.equal(fs.statSync(path.join(work, 'up.txt')).uid, user.uid);
    // An explicit user still wins.
    const root = await collect(c.process.start({ process: { cmd: 'id', args: ['-u'] } }, as('root')));
    assert.equal(root.stdout.toString(), '0\n');
  });

  it('enforces the access token on every route but /health', async () => {
    const token = randomBytes(16).toString('hex');
    assert.equal((await init({ accessToken: token })).status, 204);
    assert.equal((await request(envd, 'GET', '/health')).status, 204);
    const denied = await request(envd, 'GET', '/envs');
    assert.equal(denied.status, 401);
    assert.equal((json(denied) as { code: number }).code, 401);
    assert.equal((await request(envd, 'GET', '/envs', { headers: { 'x-access-token': 'wrong' } })).status, 401);
    assert.equal((await request(envd, 'GET', '/envs', { headers: { 'x-access-token': token } })).status, 200);
    assert.equal((await request(envd, 'GET', '/files' + q({ path: '/etc/hostname' }))).status, 401);
    const c = clients(envd.baseUrl);
    await assert.rejects(
      c.process.list({}),
      (err: unknown) => err instanceof ConnectError && err.code === Code.Unauthenticated,
    );
    assert.ok(Array.isArray((await c.process.list({}, as(undefined, token))).processes));
    const h2 = clients(envd.baseUrl, '2');
    await assert.rejects(
      h2.fs.stat({ path: '/' }),
      (err: unknown) => err instanceof ConnectError && err.code === Code.Unauthenticated,
    );
    await h2.fs.stat({ path: '/' }, as(undefined, token));
    // /init itself needs the current token; with it, the token can be rotated.
    assert.equal((await init({ accessToken: 'stolen' })).status, 401);
    const next = randomBytes(16).toString('hex');
    assert.equal((await init({ accessToken: next }, token)).status, 204);
    assert.equal((await request(envd, 'GET', '/envs', { headers: { 'x-access-token': token } })).status, 401);
    assert.equal((await request(envd, 'GET', '/envs', { headers: { 'x-access-token': next } })).status, 200);
  });
});
