// Capsules end to end: a real control plane on PostgreSQL, a real host agent
// and real capsules with envd, driven only through the public HTTP and
// WebSocket API. Lifecycle, commands, processes, files, terminals, metrics,
// team isolation and bad input.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startPlatform, waitFor, type Platform, type TeamCredentials } from '@wrenn/testkit';
import { api, ptyText, wsUrl, WsClient, type Resp } from './capsules-helpers.js';

describe('capsules', () => {
  let p: Platform;
  let call: ReturnType<typeof api>;
  let other: TeamCredentials;
  let id: string; // a running capsule shared by the tests that only read or add things

  const exec = (cid: string, body: object) => call('POST', `/v1/capsules/${cid}/exec`, body);
  const sh = async (cid: string, script: string, extra: object = {}) => {
    const r = await exec(cid, { cmd: '/bin/sh', args: ['-c', script], ...extra });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body as { stdout: string; stderr: string; exit_code: number; encoding: string };
  };
  const status = async (cid: string) => (await call('GET', `/v1/capsules/${cid}`)).body.status as string;

  before(async () => {
    p = await startPlatform({ prefix: 'cpa', subnetBase: '10.240', agents: 1 });
    call = api(p.baseUrl, { apiKey: p.apiKey });
    other = await p.newTeam();
    const r = await call('POST', '/v1/capsules', { metadata: { suite: 'capsules', shared: 'yes' } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    id = r.body.id;
  });

  after(async () => {
    await p?.stop();
  });

  it('creates a running capsule with the documented shape and audits it', async () => {
    const r = await call('GET', `/v1/capsules/${id}`);
    assert.equal(r.status, 200);
    const c = r.body;
    assert.match(c.id, /^cl-[0-9a-z]{25}$/);
    assert.equal(c.status, 'running');
    assert.equal(c.template, 'minimal');
    assert.equal(c.vcpus, 1);
    assert.equal(c.memory_mb, 512);
    assert.equal(c.disk_size_mb, 5120);
    assert.equal(c.timeout_sec, 0);
    assert.match(c.host_ip, /^10\.240\./);
    assert.deepEqual(c.metadata, { suite: 'capsules', shared: 'yes' });
    assert.ok(Date.parse(c.started_at) >= Date.parse(c.created_at));
    assert.ok(c.last_active_at && c.last_updated);
    assert.equal('error' in c, false);
    const audit = await p.pg.query(
      "SELECT action, status FROM audit_logs WHERE resource_type = 'sandbox' AND resource_id = $1",
      [id],
    );
    assert.deepEqual(audit.rows, [{ action: 'create', status: 'success' }]);
  });

  it('lists the team capsules with status and metadata filters', async () => {
    const all = await call('GET', '/v1/capsules');
    assert.equal(all.status, 200);
    assert.ok(all.body.some((c: { id: string }) => c.id === id));
    const running = await call('GET', '/v1/capsules?status=running,paused');
    assert.ok(running.body.some((c: { id: string }) => c.id === id));
    const stopped = await call('GET', '/v1/capsules?status=stopped');
    assert.ok(!stopped.body.some((c: { id: string }) => c.id === id));
    const meta = await call('GET', `/v1/capsules?metadata=${encodeURIComponent('suite=capsules&shared=yes')}`);
    assert.deepEqual(
      meta.body.map((c: { id: string }) => c.id),
      [id],
    );
    const none = await call('GET', `/v1/capsules?metadata=${encodeURIComponent('suite=other')}`);
    assert.deepEqual(none.body, []);
    const bad = await call('GET', '/v1/capsules?status=sleeping');
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.message, /status "sleeping"/);
  });

  it('runs commands: output, exit codes, envs, cwd, user and binary output', async () => {
    const hello = await sh(id, 'echo hello; echo oops >&2; exit 3');
    assert.deepEqual(
      { stdout: hello.stdout, stderr: hello.stderr, exit_code: hello.exit_code, encoding: hello.encoding },
      { stdout: 'hello\n', stderr: 'oops\n', exit_code: 3, encoding: 'utf-8' },
    );
    const r = await exec(id, {
      cmd: '/bin/sh',
      args: ['-c', 'echo "$GREETING from $(pwd)"'],
      envs: { GREETING: 'hi' },
      cwd: '/tmp',
    });
    assert.equal(r.body.stdout, 'hi from /tmp\n');
    assert.equal(r.body.sandbox_id, id);
    assert.equal(r.body.cmd, '/bin/sh');
    assert.equal(typeof r.body.duration_ms, 'number');
    const bin = await sh(id, "printf '\\377\\000\\001abc'");
    assert.equal(bin.encoding, 'base64');
    assert.deepEqual([...Buffer.from(bin.stdout, 'base64')], [0xff, 0, 1, 0x61, 0x62, 0x63]);
    assert.equal(bin.stderr, '');
    const who = await sh(id, 'id -un', { user: 'nobody' });
    assert.equal(who.stdout, 'nobody\n');
  });

  it('kills a foreground command at its timeout (504) and refuses bad exec input', async () => {
    const t0 = Date.now();
    const r = await exec(id, { cmd: '/bin/sleep', args: ['30'], timeout_sec: 1 });
    assert.equal(r.status, 504, JSON.stringify(r.body));
    assert.equal(r.body.error.code, 'timeout');
    assert.ok(Date.now() - t0 < 15_000);
    const cases: [object, RegExp][] = [
      [{}, /body\.cmd is required/],
      [{ cmd: '' }, /body\.cmd/],
      [{ cmd: 'ls', timeout_sec: 0 }, /timeout_sec/],
      [{ cmd: 'ls', envs: { 'BAD-KEY': 'x' } }, /envs/],
      [{ cmd: 'ls', tag: 'x' }, /tag applies only to background/],
      [{ cmd: 'ls', bogus: 1 }, /unknown property "bogus"/],
      [{ cmd: 'ls', args: 'not-an-array' }, /args/],
    ];
    for (const [body, msg] of cases) {
      const bad = await exec(id, body);
      assert.equal(bad.status, 400, JSON.stringify(body));
      assert.equal(bad.body.error.code, 'invalid_request');
      assert.match(bad.body.error.message, msg);
    }
    // Refused inside the capsule, with envd's reason.
    const inside: [object, RegExp][] = [
      [{ cmd: '/does/not/exist' }, /not found or not executable/],
      [{ cmd: '/bin/pwd', cwd: '/nope' }, /cwd '\/nope'/],
      [{ cmd: '/bin/pwd', user: 'ghost' }, /ghost/],
      [{ cmd: '/does/not/exist', background: true }, /not found or not executable/],
    ];
    for (const [body, msg] of inside) {
      const bad = await exec(id, body);
      assert.equal(bad.status, 400, JSON.stringify(bad.body));
      assert.match(bad.body.error.message, msg);
    }
  });

  it('runs background processes: list, follow by tag over WebSocket, kill by tag and pid', async () => {
    const bg = await exec(id, {
      cmd: '/bin/sh',
      args: ['-c', 'while true; do echo "tick $TICK"; sleep 0.2; done'],
      background: true,
      tag: 'ticker',
      envs: { TICK: 'x' },
    });
    assert.equal(bg.status, 202, JSON.stringify(bg.body));
    assert.equal(bg.body.tag, 'ticker');
    assert.ok(bg.body.pid > 0);
    const list = await call('GET', `/v1/capsules/${id}/processes`);
    assert.equal(list.status, 200);
    assert.ok(
      list.body.processes.some((x: { tag?: string; pid: number }) => x.tag === 'ticker' && x.pid === bg.body.pid),
    );

    // Follow it, leave, follow again (the process keeps running).
    for (let i = 0; i < 2; i++) {
      const ws = new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/processes/ticker/stream`), {
        'x-api-key': p.apiKey,
      });
      await ws.opened;
      await ws.waitFor((m) => m.type === 'stdout' && /tick x/.test(m.data));
      ws.close();
      await ws.waitClosed();
    }
    const follower = new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/processes/${bg.body.pid}/stream`), {
      'x-api-key': p.apiKey,
    });
    await follower.opened;
    await follower.waitFor((m) => m.type === 'stdout');
    const bad = await call('DELETE', `/v1/capsules/${id}/processes/ticker?signal=SIGHUP`);
    assert.equal(bad.status, 400);
    const kill = await call('DELETE', `/v1/capsules/${id}/processes/ticker?signal=SIGTERM`);
    assert.equal(kill.status, 204);
    const exit = await follower.waitFor((m) => m.type === 'exit');
    assert.notEqual(exit.exit_code, 0);
    await follower.waitClosed();
    const gone = await call('DELETE', `/v1/capsules/${id}/processes/ticker`);
    assert.equal(gone.status, 404, JSON.stringify(gone.body));

    const sleeper = await exec(id, { cmd: '/bin/sleep', args: ['300'], background: true });
    assert.equal(sleeper.status, 202);
    assert.match(sleeper.body.tag, /^proc-[0-9a-f]{8}$/);
    assert.equal((await call('DELETE', `/v1/capsules/${id}/processes/${sleeper.body.pid}`)).status, 204);
    await waitFor('the sleeper to be gone', async () => {
      const l = await call('GET', `/v1/capsules/${id}/processes`);
      return !l.body.processes.some((x: { pid: number }) => x.pid === sleeper.body.pid);
    });
    assert.equal((await call('DELETE', `/v1/capsules/${id}/processes/bad%20tag`)).status, 400);
  });

  it('streams a command over WebSocket and stops it on request', async () => {
    const ws = new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/exec/stream`), { 'x-api-key': p.apiKey });
    await ws.opened;
    ws.send({
      type: 'start',
      cmd: '/bin/sh',
      args: ['-c', 'echo out; echo err >&2; echo "$V in $(pwd)"; exit 7'],
      envs: { V: 'v' },
      cwd: '/tmp',
    });
    const start = await ws.waitFor((m) => m.type === 'start');
    assert.ok(start.pid > 0);
    const exit = await ws.waitFor((m) => m.type === 'exit');
    assert.equal(exit.exit_code, 7);
    const out = ws.messages
      .filter((m) => m.type === 'stdout')
      .map((m) => m.data)
      .join('');
    const err = ws.messages
      .filter((m) => m.type === 'stderr')
      .map((m) => m.data)
      .join('');
    assert.equal(out, 'out\nv in /tmp\n');
    assert.equal(err, 'err\n');
    assert.equal((await ws.waitClosed()).code, 1000);

    const long = new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/exec/stream`), { 'x-api-key': p.apiKey });
    await long.opened;
    long.send({ type: 'start', cmd: '/bin/sh', args: ['-c', 'echo started; exec sleep 300'] });
    await long.waitFor((m) => m.type === 'stdout');
    long.send({ type: 'stop' });
    await long.waitClosed();
    await waitFor('the stopped command to be gone', async () => {
      const l = await call('GET', `/v1/capsules/${id}/processes`);
      return !l.body.processes.some((x: { args: string[] }) => x.args.join(' ').includes('exec sleep 300'));
    });

    // First-message auth (browsers), and its failure.
    const browser = new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/exec/stream`));
    await browser.opened;
    browser.send({ type: 'auth', token: p.adminJwt });
    browser.send({ type: 'start', cmd: '/bin/echo', args: ['via jwt'] });
    await browser.waitFor((m) => m.type === 'stdout' && m.data === 'via jwt\n');
    const anon = new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/exec/stream`));
    await anon.opened;
    anon.send({ type: 'start', cmd: '/bin/echo' });
    const e = await anon.waitFor((m) => m.type === 'error');
    assert.match(e.data, /auth/);
    assert.equal((await anon.waitClosed()).code, 4401);
    await assert.rejects(
      new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/exec/stream`), { 'x-api-key': 'wrn_nope' }).opened,
      /HTTP 401/,
    );
  });

  it('drives a terminal: start, type, resize, reconnect by tag, kill', async () => {
    const ws = new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/pty`), { 'x-api-key': p.apiKey });
    await ws.opened;
    ws.send({ type: 'start', cmd: '/bin/bash', cols: 100, rows: 30, envs: { PS1: '$ ' } });
    const started = await ws.waitFor((m) => m.type === 'started');
    assert.match(started.tag, /^pty-[0-9a-f]{8}$/);
    ws.send({ type: 'input', data: Buffer.from('echo hi-$((40+2))\n').toString('base64') });
    await waitFor('pty output', async () => /hi-42/.test(ptyText(ws)), 15_000);
    ws.send({ type: 'resize', cols: 120, rows: 40 });
    ws.send({ type: 'input', data: Buffer.from('stty size\n').toString('base64') });
    await waitFor('the new size', async () => /40 120/.test(ptyText(ws)), 15_000);
    ws.send({ type: 'input', data: Buffer.from('export KEPT=yes\n').toString('base64') });
    ws.send({ type: 'bogus' });
    const err = await ws.waitFor((m) => m.type === 'error');
    assert.equal(err.fatal, false);
    ws.close();
    await ws.waitClosed();

    // The shell survived the disconnect: reconnect by tag and see its state.
    const again = new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/pty`), { 'x-api-key': p.apiKey });
    await again.opened;
    again.send({ type: 'connect', tag: started.tag });
    await again.waitFor((m) => m.type === 'started');
    again.send({ type: 'input', data: Buffer.from('echo kept=$KEPT\n').toString('base64') });
    await waitFor('the kept variable', async () => /kept=yes/.test(ptyText(again)), 15_000);
    again.send({ type: 'kill' });
    await again.waitFor((m) => m.type === 'exit');
    await again.waitClosed();

    const unknown = new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/pty`), { 'x-api-key': p.apiKey });
    await unknown.opened;
    unknown.send({ type: 'connect', tag: 'pty-00000000' });
    await unknown.waitFor((m) => m.type === 'error');
    await unknown.waitClosed();
  });

  it('terminal keepalive: the server pings; a silent client is dropped after the idle timeout, the terminal kept', async () => {
    // Short timings so the test takes seconds (defaults: ping every 30 s, idle after 120 s).
    await p.restartControlPlane({ WRENN_PTY_PING_INTERVAL_SEC: '0.5', WRENN_PTY_IDLE_TIMEOUT_SEC: '3' });
    try {
      const ws = new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/pty`), { 'x-api-key': p.apiKey });
      await ws.opened;
      ws.send({ type: 'start', cmd: '/bin/bash', envs: { PS1: '$ ' } });
      const started = await ws.waitFor((m) => m.type === 'started');
      // A client that answers keeps its connection past the idle timeout.
      const openedAt = Date.now();
      while (Date.now() - openedAt < 4500) {
        ws.send({ type: 'pong' });
        await new Promise((r) => setTimeout(r, 500));
      }
      assert.equal(ws.closed, null, 'an active client is not dropped');
      assert.ok(ws.messages.filter((m) => m.type === 'ping').length >= 4, 'pings every 0.5 s');
      // Then it falls silent.
      const silentFrom = Date.now();
      const closed = await ws.waitClosed(10_000);
      assert.equal(closed.code, 1000);
      assert.match(closed.reason, /idle for 3 s/);
      assert.ok(Date.now() - silentFrom >= 2500, 'not dropped before its idle timeout');
      // The terminal outlived the connection.
      const again = new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/pty`), { 'x-api-key': p.apiKey });
      await again.opened;
      again.send({ type: 'connect', tag: started.tag });
      await again.waitFor((m) => m.type === 'started');
      again.send({ type: 'input', data: Buffer.from('echo alive-$((6*7))\n').toString('base64') });
      await waitFor('output after the idle close', async () => /alive-42/.test(ptyText(again)), 15_000);
      again.send({ type: 'kill' });
      await again.waitFor((m) => m.type === 'exit');
    } finally {
      await p.restartControlPlane({ WRENN_PTY_PING_INTERVAL_SEC: '30', WRENN_PTY_IDLE_TIMEOUT_SEC: '120' });
    }
  });

  it('writes, reads, lists, makes and removes files', async () => {
    const form = new FormData();
    form.append('path', '/tmp/dir/a.txt');
    form.append('file', new Blob(['hello file']), 'a.txt');
    const w = await fetch(`${p.baseUrl}/v1/capsules/${id}/files/write`, {
      method: 'POST',
      headers: { 'x-api-key': p.apiKey },
      body: form,
    });
    assert.equal(w.status, 204, await w.text());
    const read = await fetch(`${p.baseUrl}/v1/capsules/${id}/files/read`, {
      method: 'POST',
      headers: { 'x-api-key': p.apiKey, 'content-type': 'application/json' },
      body: JSON.stringify({ path: '/tmp/dir/a.txt' }),
    });
    assert.equal(read.status, 200);
    assert.equal(read.headers.get('content-type'), 'application/octet-stream');
    assert.equal(await read.text(), 'hello file');

    const list = await call('POST', `/v1/capsules/${id}/files/list`, { path: '/tmp/dir' });
    assert.equal(list.status, 200);
    const entry = list.body.entries.find((e: { name: string }) => e.name === 'a.txt');
    assert.equal(entry.type, 'file');
    assert.equal(entry.size, 10);
    assert.equal(entry.path, '/tmp/dir/a.txt');
    assert.match(entry.permissions, /^-rw/);
    assert.equal(entry.symlink_target, null);

    const mk = await call('POST', `/v1/capsules/${id}/files/mkdir`, { path: '/tmp/dir/sub/deeper' });
    assert.equal(mk.status, 200, JSON.stringify(mk.body));
    assert.equal(mk.body.entry.type, 'directory');
    const again = await call('POST', `/v1/capsules/${id}/files/mkdir`, { path: '/tmp/dir/sub/deeper' });
    assert.equal(again.status, 409);
    const deep = await call('POST', `/v1/capsules/${id}/files/list`, { path: '/tmp/dir', depth: 2 });
    assert.ok(deep.body.entries.some((e: { path: string }) => e.path === '/tmp/dir/sub/deeper'));

    assert.equal((await call('POST', `/v1/capsules/${id}/files/remove`, { path: '/tmp/dir' })).status, 204);
    const gone = await call('POST', `/v1/capsules/${id}/files/list`, { path: '/tmp/dir' });
    assert.equal(gone.status, 404, JSON.stringify(gone.body));
    const missing = await call('POST', `/v1/capsules/${id}/files/read`, { path: '/tmp/nope' });
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, 'not_found');

    // Bad input.
    assert.equal((await call('POST', `/v1/capsules/${id}/files/read`, {})).status, 400);
    assert.equal((await call('POST', `/v1/capsules/${id}/files/list`, { path: '/', depth: 99 })).status, 400);
    const noPath = new FormData();
    noPath.append('file', new Blob(['x']), 'x');
    const np = await fetch(`${p.baseUrl}/v1/capsules/${id}/files/write`, {
      method: 'POST',
      headers: { 'x-api-key': p.apiKey },
      body: noPath,
    });
    assert.equal(np.status, 400);
    assert.match(((await np.json()) as { error: { message: string } }).error.message, /path/);
    const json = await call('POST', `/v1/capsules/${id}/files/write`, { path: '/tmp/x' });
    assert.equal(json.status, 415);
    const fileFirst = new FormData();
    fileFirst.append('file', new Blob(['x']), 'x');
    fileFirst.append('path', '/tmp/late');
    const ff = await fetch(`${p.baseUrl}/v1/capsules/${id}/files/stream/write`, {
      method: 'POST',
      headers: { 'x-api-key': p.apiKey },
      body: fileFirst,
    });
    assert.equal(ff.status, 400);
    assert.match(((await ff.json()) as { error: { message: string } }).error.message, /must come before/);
    assert.equal((await call('POST', `/v1/capsules/${id}/files/list`, { path: '/tmp/late' })).status, 404);
  });

  it('watches a directory over WebSocket: events per change, precise errors', async () => {
    await sh(id, 'rm -rf /tmp/wd && mkdir -p /tmp/wd/deep && touch /tmp/wd-file');
    const url = (q: string) => wsUrl(p.baseUrl, `/v1/capsules/${id}/files/watch?${q}`);
    const ws = new WsClient(url('path=/tmp/wd&recursive=true'), { 'x-api-key': p.apiKey });
    await ws.opened;
    await ws.waitFor((m) => m.type === 'started');
    await sh(id, 'echo 1 > /tmp/wd/a && echo 2 > /tmp/wd/deep/b && mv /tmp/wd/a /tmp/wd/c && rm /tmp/wd/c');
    const seen = () => ws.messages.filter((m) => m.type === 'event').map((m) => `${m.op} ${m.name}`);
    await waitFor('the changes', async () =>
      ['create a', 'create deep/b', 'remove c'].every((e) => seen().includes(e)),
    );
    assert.ok(
      seen().some((e) => /^(rename|remove) a$/.test(e)),
      `the move: ${seen().join(', ')}`,
    );
    ws.close();
    await ws.waitClosed();

    // Bad input is refused before the upgrade, or closes with the HTTP status as 4xxx.
    await assert.rejects(new WsClient(url('recursive=true'), { 'x-api-key': p.apiKey }).opened, /HTTP 400/);
    await assert.rejects(new WsClient(url('path=/tmp&recursive=yes'), { 'x-api-key': p.apiKey }).opened, /HTTP 400/);
    await assert.rejects(new WsClient(url('path=/tmp'), { 'x-api-key': other.apiKey }).opened, /HTTP 404/);
    for (const [q, code, re] of [
      ['path=/tmp/none', 4404, /not found|no such/i],
      ['path=/tmp/wd-file', 4400, /not a directory/],
      ['path=/root&user=nobody', 4403, /permission/i],
    ] as const) {
      const bad = new WsClient(url(q), { 'x-api-key': p.apiKey });
      await bad.opened;
      const closed = await bad.waitClosed();
      assert.equal(closed.code, code, `${q}: ${JSON.stringify(bad.messages)}`);
      assert.match(bad.messages.find((m) => m.type === 'error')?.data ?? '', re);
    }
  });

  it('refuses a file over 100 MiB on files/write with 413 and writes nothing', async () => {
    const big = new Blob([new Uint8Array(100 * 1024 * 1024 + 1)]);
    const form = new FormData();
    form.append('path', '/tmp/too-big');
    form.append('file', big, 'big');
    const r = await fetch(`${p.baseUrl}/v1/capsules/${id}/files/write`, {
      method: 'POST',
      headers: { 'x-api-key': p.apiKey },
      body: form,
    });
    assert.equal(r.status, 413);
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'too_large');
    assert.equal((await call('POST', `/v1/capsules/${id}/files/list`, { path: '/tmp/too-big' })).status, 404);
  });

  it('serves metrics of a running capsule and the team stats', async () => {
    await waitFor('metric points', async () => {
      const m = await call('GET', `/v1/capsules/${id}/metrics?range=5m`);
      assert.equal(m.status, 200);
      return m.body.points.length > 0 && m.body;
    });
    const m = await call('GET', `/v1/capsules/${id}/metrics`);
    assert.equal(m.body.range, '10m');
    assert.equal(m.body.sandbox_id, id);
    const pt = m.body.points[0];
    assert.ok(pt.timestamp_unix > 1_700_000_000 && pt.mem_bytes > 0 && pt.cpu_pct >= 0 && pt.cpu_pct <= 100);
    assert.equal((await call('GET', `/v1/capsules/${id}/metrics?range=7m`)).status, 400);

    const stats = await waitFor(
      'a stats sample',
      async () => {
        const s = await call('GET', '/v1/capsules/stats?range=5m');
        assert.equal(s.status, 200);
        return s.body.series.running.length > 0 && s.body;
      },
      30_000,
    );
    assert.equal(stats.range, '5m');
    assert.ok(stats.current.running_count >= 1);
    assert.ok(stats.current.vcpus_reserved >= 1 && stats.current.memory_mb_reserved >= 512);
    assert.ok(stats.peaks.running_count >= stats.current.running_count);
    assert.equal(stats.series.labels.length, stats.series.memory_mb.length);
    assert.ok(stats.series.running.some((n: number) => n >= 1));
    assert.equal((await call('GET', '/v1/capsules/stats?range=2d')).status, 400);
    const theirs = await call('GET', '/v1/capsules/stats', undefined, { apiKey: other.apiKey });
    assert.equal(theirs.body.current.running_count, 0);
  });

  it('pauses and resumes: files and processes survive, exec on paused is 409, metrics come from the database', async () => {
    const c = await call('POST', '/v1/capsules', { timeout_sec: 600 });
    assert.equal(c.status, 201);
    const cid = c.body.id as string;
    await sh(cid, 'echo persisted > /root/keep.txt');
    const bg = await exec(cid, { cmd: '/bin/sleep', args: ['600'], background: true, tag: 'survivor' });
    assert.equal(bg.status, 202);
    await waitFor(
      'metrics',
      async () => (await call('GET', `/v1/capsules/${cid}/metrics?range=5m`)).body.points.length > 2,
    );

    const paused = await call('POST', `/v1/capsules/${cid}/pause`);
    assert.equal(paused.status, 200, JSON.stringify(paused.body));
    assert.equal(paused.body.status, 'paused');
    const denied = await exec(cid, { cmd: '/bin/true' });
    assert.equal(denied.status, 409);
    assert.equal(denied.body.error.code, 'invalid_state');
    assert.match(denied.body.error.message, /paused/);
    assert.equal((await call('POST', `/v1/capsules/${cid}/pause`)).status, 409);
    assert.equal((await call('POST', `/v1/capsules/${cid}/ping`)).status, 409);
    assert.equal((await call('POST', `/v1/capsules/${cid}/files/list`, { path: '/' })).status, 409);
    const stored = await call('GET', `/v1/capsules/${cid}/metrics?range=5m`);
    assert.equal(stored.status, 200);
    assert.ok(stored.body.points.length > 0, 'paused metrics come from the stored points');
    const points = await p.pg.query(
      "SELECT count(*)::int AS n FROM sandbox_metric_points WHERE tier = '10m' AND sandbox_id = (SELECT id FROM sandboxes ORDER BY created_at DESC LIMIT 1)",
    );
    assert.ok(points.rows[0].n > 0);

    const resumed = await call('POST', `/v1/capsules/${cid}/resume`);
    assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
    assert.equal(resumed.body.status, 'running');
    assert.equal((await sh(cid, 'cat /root/keep.txt')).stdout, 'persisted\n');
    const procs = await call('GET', `/v1/capsules/${cid}/processes`);
    assert.ok(procs.body.processes.some((x: { tag?: string }) => x.tag === 'survivor'));
    assert.equal((await call('POST', `/v1/capsules/${cid}/ping`)).status, 204);
    assert.equal((await call('POST', `/v1/capsules/${cid}/resume`)).body.status, 'running');

    const actions = await p.pg.query('SELECT action FROM audit_logs WHERE resource_id = $1 ORDER BY created_at', [cid]);
    assert.deepEqual(
      actions.rows.map((r) => r.action),
      ['create', 'pause', 'resume'],
    );
    assert.equal((await call('DELETE', `/v1/capsules/${cid}`)).status, 204);
    assert.equal(await status(cid), 'stopped');
    assert.equal((await call('GET', `/v1/capsules/${cid}/metrics`)).status, 404);
    assert.equal((await call('DELETE', `/v1/capsules/${cid}`)).status, 204, 'destroying again changes nothing');
    assert.equal((await exec(cid, { cmd: '/bin/true' })).status, 409);
  });

  it('creates with all defaults when there is no body', async () => {
    const res = await fetch(`${p.baseUrl}/v1/capsules`, { method: 'POST', headers: { 'x-api-key': p.apiKey } });
    const body = (await res.json()) as { id: string; status: string; vcpus: number; metadata: object };
    assert.equal(res.status, 201, JSON.stringify(body));
    assert.equal(body.status, 'running');
    assert.deepEqual(body.metadata, {});
    assert.equal((await call('DELETE', `/v1/capsules/${body.id}`)).status, 204);
  });

  it('pauses an idle capsule after its timeout_sec; its metrics stay readable', async () => {
    const c = await call('POST', '/v1/capsules', { timeout_sec: 2 });
    assert.equal(c.status, 201);
    const cid = c.body.id as string;
    await sh(cid, 'echo before > /root/ttl.txt');
    await waitFor('the idle capsule to be paused', async () => (await status(cid)) === 'paused', 30_000);
    const m = await call('GET', `/v1/capsules/${cid}/metrics?range=5m`);
    assert.equal(m.status, 200);
    assert.ok(m.body.points.length > 0, 'points of a capsule its host paused');
    assert.equal((await call('POST', `/v1/capsules/${cid}/resume`)).status, 200);
    assert.equal((await sh(cid, 'cat /root/ttl.txt')).stdout, 'before\n');
    assert.equal((await call('DELETE', `/v1/capsules/${cid}`)).status, 204);
  });

  it('changes the idle timeout of a running capsule (paused after it) and refuses bad timeouts', async () => {
    const c = await call('POST', '/v1/capsules', { timeout_sec: 0 });
    assert.equal(c.status, 201);
    const cid = c.body.id as string;
    for (const body of [
      {},
      { timeout_sec: -1 },
      { timeout_sec: 2_592_001 },
      { timeout_sec: '5' },
      { timeout_sec: 1, x: 1 },
    ]) {
      const r = await call('POST', `/v1/capsules/${cid}/timeout`, body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(r.body.error.message, /timeout_sec|unknown property/);
    }
    assert.equal((await call('GET', `/v1/capsules/${cid}`)).body.timeout_sec, 0, 'a refused change changes nothing');
    assert.equal(
      (await call('POST', `/v1/capsules/${cid}/timeout`, { timeout_sec: 2 }, { apiKey: other.apiKey })).status,
      404,
    );
    const set = await call('POST', `/v1/capsules/${cid}/timeout`, { timeout_sec: 2 });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    assert.equal(set.body.timeout_sec, 2);
    await waitFor(
      'the capsule to be paused after its new timeout',
      async () => (await status(cid)) === 'paused',
      30_000,
    );
    assert.equal((await call('DELETE', `/v1/capsules/${cid}`)).status, 204);
    const gone = await call('POST', `/v1/capsules/${cid}/timeout`, { timeout_sec: 5 });
    assert.equal(gone.status, 409);
    assert.match(gone.body.error.message, /stopped/);
  });

  it('keeps state consistent under concurrent pause, resume and destroy', async () => {
    const agent = p.agents[0]!;
    const creds = JSON.parse(fs.readFileSync(path.join(agent.dataDir, 'host-credentials.json'), 'utf8'));
    const onHost = async () => {
      const res = await fetch(`http://${agent.address}/hostagent.v1.HostAgentService/ListSandboxes`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${creds.agent_token}` },
        body: '{}',
      });
      const body = (await res.json()) as { sandboxes?: { sandboxId: string; status: string }[] };
      return body.sandboxes ?? [];
    };
    const c = await call('POST', '/v1/capsules', {});
    const cid = c.body.id as string;
    const [pause, destroy] = await Promise.all([
      call('POST', `/v1/capsules/${cid}/pause`),
      call('DELETE', `/v1/capsules/${cid}`),
    ]);
    assert.equal(destroy.status, 204);
    assert.ok([200, 409].includes(pause.status), JSON.stringify(pause.body));
    assert.equal(await status(cid), 'stopped');
    await waitFor('the capsule to leave its host', async () => !(await onHost()).some((x) => x.sandboxId === cid));

    const d = await call('POST', '/v1/capsules', {});
    const did = d.body.id as string;
    assert.equal((await call('POST', `/v1/capsules/${did}/pause`)).status, 200);
    const resumes = await Promise.all([1, 2, 3].map(() => call('POST', `/v1/capsules/${did}/resume`)));
    for (const r of resumes) assert.ok([200, 409].includes(r.status), JSON.stringify(r.body));
    assert.ok(resumes.some((r) => r.status === 200));
    assert.equal(await status(did), 'running');
    assert.equal((await onHost()).find((x) => x.sandboxId === did)?.status, 'running');
    assert.equal((await sh(did, 'echo ok')).stdout, 'ok\n');
    assert.equal((await call('DELETE', `/v1/capsules/${did}`)).status, 204);
  });

  it("keeps teams apart: another team's capsule is a 404 everywhere", async () => {
    const them = api(p.baseUrl, { apiKey: other.apiKey });
    const jwt = api(p.baseUrl, { jwt: other.jwt });
    const attempts: [string, string, unknown?][] = [
      ['GET', `/v1/capsules/${id}`],
      ['DELETE', `/v1/capsules/${id}`],
      ['POST', `/v1/capsules/${id}/pause`],
      ['POST', `/v1/capsules/${id}/resume`],
      ['POST', `/v1/capsules/${id}/ping`],
      ['POST', `/v1/capsules/${id}/exec`, { cmd: '/bin/true' }],
      ['GET', `/v1/capsules/${id}/processes`],
      ['DELETE', `/v1/capsules/${id}/processes/1`],
      ['POST', `/v1/capsules/${id}/files/read`, { path: '/etc/hostname' }],
      ['POST', `/v1/capsules/${id}/files/list`, { path: '/' }],
      ['POST', `/v1/capsules/${id}/files/mkdir`, { path: '/tmp/theirs' }],
      ['POST', `/v1/capsules/${id}/files/remove`, { path: '/tmp' }],
      ['POST', `/v1/capsules/${id}/files/stream/read`, { path: '/etc/hostname' }],
      ['GET', `/v1/capsules/${id}/metrics`],
    ];
    for (const [method, url, body] of attempts) {
      for (const client of [them, jwt]) {
        const r: Resp = await client(method, url, body);
        assert.equal(r.status, 404, `${method} ${url}: ${JSON.stringify(r.body)}`);
      }
    }
    assert.ok(!(await them('GET', '/v1/capsules')).body.some((c: { id: string }) => c.id === id));
    await assert.rejects(
      new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/pty`), { 'x-api-key': other.apiKey }).opened,
      /HTTP 404/,
    );
    const viaMessage = new WsClient(wsUrl(p.baseUrl, `/v1/capsules/${id}/exec/stream`));
    await viaMessage.opened;
    viaMessage.send({ type: 'auth', token: other.jwt });
    await viaMessage.waitFor((m) => m.type === 'error');
    assert.equal((await viaMessage.waitClosed()).code, 4404);
    assert.equal(await status(id), 'running');
    assert.equal((await call('GET', '/v1/capsules/cl-bad')).status, 400);
    assert.equal((await call('GET', '/v1/capsules/cl-0000000000000000000000000')).status, 404);
    assert.equal((await call('GET', '/v1/capsules', undefined, {})).status, 401);
  });

  it('refuses bad create input precisely and creates nothing', async () => {
    const before = (await p.pg.query('SELECT count(*)::int AS n FROM sandboxes')).rows[0].n;
    const cases: [object, number, RegExp][] = [
      [{ vcpus: 0 }, 400, /vcpus/],
      [{ vcpus: 1.5 }, 400, /vcpus/],
      [{ vcpus: 64 }, 400, /vcpus must be at most/],
      [{ memory_mb: 64 }, 400, /memory_mb/],
      [{ memory_mb: 262_144 }, 400, /memory_mb must be at most/],
      [{ disk_size_mb: 10 }, 400, /disk_size_mb/],
      [{ timeout_sec: -1 }, 400, /timeout_sec/],
      [{ template: '../etc' }, 400, /template/],
      [{ template: 'python' }, 404, /template "python" not found/],
      [{ metadata: { 'bad key': 'x' } }, 400, /metadata/],
      [{ metadata: { k: 1 } }, 400, /metadata/],
      [{ color: 'red' }, 400, /unknown property "color"/],
    ];
    for (const [body, code, msg] of cases) {
      const r = await call('POST', '/v1/capsules', body);
      assert.equal(r.status, code, `${JSON.stringify(body)} → ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, msg);
    }
    const after = (await p.pg.query('SELECT count(*)::int AS n FROM sandboxes')).rows[0].n;
    assert.equal(after, before);
  });

  it('puts a capsule whose host cannot start it in state error, with the reason', async () => {
    const agent = p.agents[0]!;
    await agent.kill();
    try {
      const r = await call('POST', '/v1/capsules', { metadata: { fate: 'doomed' } });
      assert.equal(r.status, 503, JSON.stringify(r.body));
      assert.equal(r.body.error.code, 'host_unavailable');
      assert.match(r.body.error.message, /host host-[0-9a-z]+ is unreachable/);
      const failed = await call('GET', `/v1/capsules?status=error&metadata=${encodeURIComponent('fate=doomed')}`);
      assert.equal(failed.body.length, 1);
      assert.equal(failed.body[0].status, 'error');
      assert.match(failed.body[0].error, /unreachable/);
      assert.ok(!(await call('GET', '/v1/capsules')).body.some((c: { id: string }) => c.id === failed.body[0].id));
      const audit = await p.pg.query('SELECT status FROM audit_logs WHERE resource_id = $1', [failed.body[0].id]);
      assert.deepEqual(audit.rows, [{ status: 'error' }]);
      const onDead = await exec(id, { cmd: '/bin/true' });
      assert.equal(onDead.status, 503);
      assert.match(onDead.body.error.message, /unreachable/);
    } finally {
      await agent.start();
    }
    assert.equal((await sh(id, 'echo back')).stdout, 'back\n');
  });

  it('answers 503 no_hosts_available when no host can take the capsule', async () => {
    await p.pg.query("UPDATE hosts SET status = 'draining'");
    try {
      const r = await call('POST', '/v1/capsules', {});
      assert.equal(r.status, 503);
      assert.equal(r.body.error.code, 'no_hosts_available');
    } finally {
      await p.pg.query("UPDATE hosts SET status = 'online'");
    }
  });
});
