// End to end: the real host agent (child process), the real container
// runtime, real capsules with the real envd, driven only through the
// generated HostAgentService Connect clients.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import { createHash, randomBytes } from 'node:crypto';
import { Code, ConnectError } from '@connectrpc/connect';
import { create } from '@bufbuild/protobuf';
import {
  WriteFileStreamRequestSchema,
  type ExecStreamResponse,
  type PtyAttachResponse,
} from '@wrenn/contracts/gen/hostagent/v1/hostagent_pb';
import {
  StreamReader,
  newCapsuleId,
  randomToken,
  removeDataDir,
  startAgent,
  waitUntil,
  type AgentClient,
  type RunningAgent,
} from './agent-harness.js';
import { assertNoLeaks } from './agent-leaks.js';
import { rejects, sh, text } from './rpc-asserts.js';

/** Peak resident memory of a process (VmHWM). */
const peakRssMiB = (pid: number) =>
  Number(/VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

describe('host agent over Connect RPC', () => {
  let agent: RunningAgent;
  let c: AgentClient;
  const token = randomToken();
  const id = newCapsuleId();

  before(async () => {
    agent = await startAgent({ prefix: 'hta', subnet: '10.231.0.0/24', token });
    c = agent.client;
    const res = await c.createSandbox({
      sandboxId: id,
      template: 'minimal',
      vcpus: 1,
      memoryMb: 512,
      diskSizeMb: 1024,
    });
    assert.equal(res.sandboxId, id);
    assert.equal(res.status, 'running');
    assert.match(res.hostIp, /^10\.231\.0\.\d+$/);
  });

  after(async () => {
    if (agent) {
      assert.equal(await agent.terminate(), 0);
      await assertNoLeaks('hta', agent.dataDir, { retired: true });
      removeDataDir(agent.dataDir);
    }
  });

  test('token: calls without it or with a wrong one are Unauthenticated', async () => {
    await rejects(agent.anonymous.hostInfo({}), Code.Unauthenticated);
    await rejects(
      agent.anonymous.listSandboxes({}, { headers: { authorization: `Bearer ${token}x` } }),
      Code.Unauthenticated,
    );
    await rejects(
      agent.anonymous.execStream({ sandboxId: id, cmd: 'true' })[Symbol.asyncIterator]().next(),
      Code.Unauthenticated,
    );
  });

  test('HostInfo over HTTP/1.1 and h2c', async () => {
    for (const client of [agent.client, agent.client1]) {
      const info = await client.hostInfo({});
      assert.equal(info.cpuCores, os.availableParallelism());
      assert.equal(info.arch, os.arch());
      assert.ok(info.memoryMb > 0n && info.diskGb > 0n);
      assert.equal(info.runningSandboxes, 1);
      assert.equal(info.pausedSandboxes, 0);
      assert.ok(info.version);
    }
  });

  test('Exec: output, exit code, stderr, env, cwd, stdin, binary-safe', async () => {
    const r = await c.exec({ sandboxId: id, ...sh('echo out; echo err >&2; exit 3') });
    assert.equal(text(r.stdout), 'out\n');
    assert.equal(text(r.stderr), 'err\n');
    assert.equal(r.exitCode, 3);

    const env = await c.exec({ sandboxId: id, ...sh('echo "$FOO:$(pwd)"'), envs: { FOO: 'bar' }, cwd: '/tmp' });
    assert.equal(text(env.stdout), 'bar:/tmp\n');

    const bytes = Buffer.from([0, 1, 2, 255, 254, 10, 13, 0, 128]);
    const cat = await c.exec({ sandboxId: id, cmd: 'cat', stdin: bytes });
    assert.deepEqual(Buffer.from(cat.stdout), bytes);
    assert.equal(cat.exitCode, 0);

    const bin = await c.exec({ sandboxId: id, ...sh("printf '\\000\\377\\001'") });
    assert.deepEqual(Buffer.from(bin.stdout), Buffer.from([0, 255, 1]));

    // Over HTTP/1.1 too.
    const h1 = await agent.client1.exec({ sandboxId: id, cmd: 'echo', args: ['h1'] });
    assert.equal(text(h1.stdout), 'h1\n');
  });

  test('users: exec and files as another capsule user; defaults from CreateSandbox and ResumeSandbox', async () => {
    const who = await c.exec({ sandboxId: id, ...sh('id -un; pwd'), user: 'user' });
    assert.equal(text(who.stdout), 'user\n/home/user\n');
    await rejects(
      c.writeFile({ sandboxId: id, path: '/root/not-yours', content: Buffer.from('x'), user: 'user' }),
      Code.PermissionDenied,
    );
    await c.writeFile({ sandboxId: id, path: 'mine.txt', content: Buffer.from('hi'), user: 'user' });
    const owner = await c.exec({ sandboxId: id, cmd: 'stat', args: ['-c', '%U', '/home/user/mine.txt'] });
    assert.equal(text(owner.stdout), 'user\n', 'a relative path is relative to the user home; the file is theirs');

    const d = newCapsuleId();
    await c.createSandbox({
      sandboxId: d,
      template: 'minimal',
      defaultUser: 'user',
      defaultEnv: { GREETING: 'hello' },
    });
    try {
      const r = await c.exec({ sandboxId: d, ...sh('echo "$(id -un) $GREETING"') });
      assert.equal(text(r.stdout), 'user hello\n');
      await c.pauseSandbox({ sandboxId: d });
      await c.resumeSandbox({ sandboxId: d, timeoutSec: 0, defaultEnv: { GREETING: 'again' } });
      const r2 = await c.exec({ sandboxId: d, ...sh('echo "$(id -un) $GREETING"') });
      assert.equal(text(r2.stdout), 'user again\n');
    } finally {
      await c.destroySandbox({ sandboxId: d });
    }
  });

  test('Exec: timeout kills the command', async () => {
    const t0 = Date.now();
    await rejects(
      c.exec({ sandboxId: id, cmd: 'sleep', args: ['30'], timeoutSec: 1 }),
      Code.DeadlineExceeded,
      /timed out/,
    );
    assert.ok(Date.now() - t0 < 10_000);
    const ps = await c.exec({ sandboxId: id, ...sh('ps -eo args | grep -c "^sleep 30" || true') });
    assert.equal(text(ps.stdout).trim(), '0', 'the timed-out process is gone');
  });

  test('ExecStream: start, data as it comes, end', async () => {
    const events: ExecStreamResponse['event'][] = [];
    for await (const ev of c.execStream({
      sandboxId: id,
      ...sh('for i in 1 2 3; do echo $i; sleep 0.1; done; echo e >&2; exit 4'),
    })) {
      events.push(ev.event);
    }
    assert.equal(events[0]!.case, 'start');
    assert.ok(events[0]!.case === 'start' && events[0]!.value.pid > 0);
    const out = events
      .filter((e) => e.case === 'data' && e.value.output.case === 'stdout')
      .map((e) => (e.case === 'data' ? text(e.value.output.value as Uint8Array) : ''))
      .join('');
    assert.equal(out, '1\n2\n3\n');
    assert.ok(events.some((e) => e.case === 'data' && e.value.output.case === 'stderr'));
    const last = events.at(-1)!;
    assert.equal(last.case, 'end');
    assert.equal(last.case === 'end' && last.value.exitCode, 4);
  });

  test('files: write/read whole, missing file, escape attempts stay inside the capsule', async () => {
    const content = randomBytes(300 * 1024);
    await c.writeFile({ sandboxId: id, path: '/tmp/a/b/blob.bin', content });
    const back = await c.readFile({ sandboxId: id, path: '/tmp/a/b/blob.bin' });
    assert.deepEqual(Buffer.from(back.content), content);

    await rejects(c.readFile({ sandboxId: id, path: '/nope/missing.txt' }), Code.NotFound);

    const capsulePasswd = text((await c.exec({ sandboxId: id, cmd: 'cat', args: ['/etc/passwd'] })).stdout);
    for (const p of ['../../../etc/passwd', '/../../../../etc/passwd', '/tmp/../../etc/passwd']) {
      const r = await c.readFile({ sandboxId: id, path: p });
      assert.equal(text(r.content), capsulePasswd, `${p} is the capsule's /etc/passwd`);
    }
    // A marker written through the escape path lands in the capsule, not on the host.
    await c.writeFile({ sandboxId: id, path: '../../../../tmp/escape-marker', content: Buffer.from('x') });
    assert.equal(fs.existsSync('/tmp/escape-marker'), false);
    assert.equal(text((await c.exec({ sandboxId: id, cmd: 'cat', args: ['/tmp/escape-marker'] })).stdout), 'x');
  });

  test('files: streamed write and read of 256 MiB in 64 KiB chunks, never held whole by the agent', async () => {
    const size = 256 * 1024 * 1024;
    const hash = createHash('sha256');
    const peakBefore = peakRssMiB(agent.proc.pid!);
    async function* body() {
      yield create(WriteFileStreamRequestSchema, {
        content: { case: 'meta', value: { sandboxId: id, path: '/tmp/big.bin' } },
      });
      for (let off = 0; off < size; off += 1024 * 1024) {
        const chunk = randomBytes(1024 * 1024);
        hash.update(chunk);
        yield create(WriteFileStreamRequestSchema, { content: { case: 'chunk', value: chunk } });
      }
    }
    await c.writeFileStream(body());
    const want = hash.digest('hex');
    const sum = await c.exec({ sandboxId: id, cmd: 'sha256sum', args: ['/tmp/big.bin'] });
    assert.equal(text(sum.stdout).split(' ')[0], want);

    const got = createHash('sha256');
    let total = 0;
    let maxChunk = 0;
    for await (const part of c.readFileStream({ sandboxId: id, path: '/tmp/big.bin' })) {
      got.update(part.chunk);
      total += part.chunk.length;
      maxChunk = Math.max(maxChunk, part.chunk.length);
    }
    assert.equal(total, size);
    assert.equal(got.digest('hex'), want);
    assert.equal(maxChunk, 64 * 1024);
    const grew = peakRssMiB(agent.proc.pid!) - peakBefore;
    // The agent's heap settles ~50 MiB higher under load whatever the size; holding the file would add 256.
    assert.ok(grew < 128, `the agent's peak memory grew by ${grew.toFixed(0)} MiB moving a 256 MiB file both ways`);
    await c.removePath({ sandboxId: id, path: '/tmp/big.bin' });

    // Meta must come first.
    await rejects(
      c.writeFileStream(
        (async function* () {
          yield create(WriteFileStreamRequestSchema, { content: { case: 'chunk', value: Buffer.from('x') } });
        })(),
      ),
      Code.InvalidArgument,
      /first WriteFileStream message must be meta/,
    );
    // Missing file while streaming.
    const rs = c.readFileStream({ sandboxId: id, path: '/tmp/none.bin' })[Symbol.asyncIterator]();
    await rejects(rs.next(), Code.NotFound);
  });

  test('ListDir, MakeDir, RemovePath', async () => {
    const made = await c.makeDir({ sandboxId: id, path: '/tmp/dir1/sub' });
    assert.equal(made.entry?.type, 'directory');
    assert.equal(made.entry?.name, 'sub');
    await c.writeFile({ sandboxId: id, path: '/tmp/dir1/f.txt', content: Buffer.from('hello') });
    const list = await c.listDir({ sandboxId: id, path: '/tmp/dir1', depth: 1 });
    const byName = new Map(list.entries.map((e) => [e.name, e]));
    assert.equal(byName.get('sub')?.type, 'directory');
    assert.equal(byName.get('f.txt')?.type, 'file');
    assert.equal(byName.get('f.txt')?.size, 5n);
    assert.equal(byName.get('f.txt')?.path, '/tmp/dir1/f.txt');
    assert.ok(byName.get('f.txt')!.modifiedAt > 0n);
    const root = await c.listDir({ sandboxId: id, path: '/', depth: 1 });
    for (const d of ['etc', 'tmp', 'usr'])
      assert.ok(
        root.entries.some((e) => e.name === d),
        d,
      );

    await c.removePath({ sandboxId: id, path: '/tmp/dir1' });
    await rejects(c.listDir({ sandboxId: id, path: '/tmp/dir1', depth: 1 }), Code.NotFound);
    await rejects(c.listDir({ sandboxId: id, path: '', depth: 1 }), Code.InvalidArgument, /path is required/);
  });

  test('WatchDir: changes under a directory, as the user sees them, until the stream is closed', async () => {
    await c.exec({ sandboxId: id, ...sh('rm -rf /tmp/watched && mkdir -p /tmp/watched/sub') });
    const ac = new AbortController();
    const r = new StreamReader(
      c.watchDir({ sandboxId: id, path: '/tmp/watched', recursive: true }, { signal: ac.signal }),
    );
    const changes = (items: typeof r.items) =>
      items.flatMap((i) => (i.event.case === 'change' ? [`${i.event.value.op} ${i.event.value.name}`] : []));
    await r.waitFor((items) => items[0]?.event.case === 'started', 10_000, 'started');
    await c.exec({
      sandboxId: id,
      ...sh('echo a > /tmp/watched/f && echo b > /tmp/watched/sub/g && rm /tmp/watched/f'),
    });
    await r.waitFor(
      (items) => ['create f', 'create sub/g', 'remove f'].every((e) => changes(items).includes(e)),
      10_000,
      'create, nested create and remove',
    );
    ac.abort();
    await r.finished;
    // Bad input: a file is not a directory, a missing directory, a user who cannot read it, an unknown capsule.
    await c.exec({ sandboxId: id, ...sh('touch /tmp/plain && mkdir -p /root/private && chmod 700 /root') });
    const fails = async (req: { sandboxId?: string; path: string; user?: string }, code: Code) => {
      const s = new StreamReader(c.watchDir({ sandboxId: id, ...req }));
      await s.finished;
      assert.ok(s.error instanceof ConnectError, `watching ${req.path} fails: ${String(s.error)}`);
      assert.equal(Code[s.error.code], Code[code], s.error.message);
    };
    await fails({ path: '/tmp/plain' }, Code.InvalidArgument);
    await fails({ path: '/tmp/nope' }, Code.NotFound);
    await fails({ path: '/root/private', user: 'nobody' }, Code.PermissionDenied);
    await fails({ sandboxId: newCapsuleId(), path: '/tmp' }, Code.NotFound);
    await fails({ path: 'a\0b' }, Code.InvalidArgument);
  });

  test('background processes: start, list, connect, kill by tag and pid', async () => {
    const bg = await c.startBackground({
      sandboxId: id,
      ...sh('while true; do echo tick; sleep 0.1; done'),
      tag: 'ticker',
    });
    assert.equal(bg.tag, 'ticker');
    assert.ok(bg.pid > 0);
    const auto = await c.startBackground({ sandboxId: id, cmd: 'sleep', args: ['1000'] });
    assert.match(auto.tag, /^proc-[0-9a-f]{8}$/);

    const list = await c.listProcesses({ sandboxId: id });
    const ticker = list.processes.find((p) => p.tag === 'ticker');
    assert.equal(ticker?.pid, bg.pid);
    assert.equal(ticker?.cmd, '/bin/sh');
    assert.ok(list.processes.some((p) => p.pid === auto.pid));

    const ac = new AbortController();
    const reader = new StreamReader(
      c.connectProcess({ sandboxId: id, selector: { case: 'tag', value: 'ticker' } }, { signal: ac.signal }),
    );
    await reader.waitFor(
      (items) => items.filter((i) => i.event.case === 'data').length >= 2,
      5000,
      'two ticks from ConnectProcess',
    );
    await c.killProcess({ sandboxId: id, selector: { case: 'tag', value: 'ticker' }, signal: 'SIGTERM' });
    await reader.waitFor((items) => items.some((i) => i.event.case === 'end'), 5000, 'end event after kill');
    await reader.finished;

    await rejects(
      c.killProcess({ sandboxId: id, selector: { case: 'pid', value: auto.pid }, signal: 'SIGHUP' }),
      Code.InvalidArgument,
      /SIGKILL or SIGTERM/,
    );
    await c.killProcess({ sandboxId: id, selector: { case: 'pid', value: auto.pid }, signal: '' });
    await waitUntil(
      async () =>
        !(await c.listProcesses({ sandboxId: id })).processes.some((p) => p.pid === auto.pid || p.tag === 'ticker'),
      5000,
      'killed processes to leave the list',
    );
    await rejects(c.killProcess({ sandboxId: id, selector: { case: 'tag', value: 'no-such-tag' } }), Code.NotFound);
    await rejects(c.killProcess({ sandboxId: id, selector: { case: undefined } }), Code.InvalidArgument, /selector/);
  });

  test('PTY: bash, stty size, typing, resize, detach and re-attach by tag, kill', async () => {
    const tag = 'pty-test';
    const ac1 = new AbortController();
    const out = (items: PtyAttachResponse[]) =>
      items.map((i) => (i.event.case === 'output' ? text(i.event.value.data) : '')).join('');
    const r1 = new StreamReader(
      c.ptyAttach(
        { sandboxId: id, tag, cmd: '/bin/bash', args: ['-i'], cols: 80, rows: 24, envs: { PS1: 'wrenn$ ' } },
        { signal: ac1.signal },
      ),
    );
    await r1.waitFor((items) => items[0]?.event.case === 'started', 5000, 'started');
    const started = r1.items[0]!.event;
    assert.ok(started.case === 'started' && started.value.pid > 0 && started.value.tag === tag);

    await c.ptySendInput({ sandboxId: id, tag, data: Buffer.from('stty size\n') });
    await r1.waitFor((items) => /24 80/.test(out(items)), 5000, '"24 80" from stty size');

    await c.ptyResize({ sandboxId: id, tag, cols: 100, rows: 30 });
    await c.ptySendInput({ sandboxId: id, tag, data: Buffer.from('stty size; X=41; echo val=$((X+1))\n') });
    await r1.waitFor(
      (items) => /30 100/.test(out(items)) && /val=42/.test(out(items)),
      5000,
      'resized size and typed command',
    );

    // Detach: the PTY survives the stream ending.
    ac1.abort();
    await r1.finished;
    const ac2 = new AbortController();
    const r2 = new StreamReader(c.ptyAttach({ sandboxId: id, tag, cmd: '' }, { signal: ac2.signal }));
    await new Promise((r) => setTimeout(r, 200));
    await c.ptySendInput({ sandboxId: id, tag, data: Buffer.from('echo again-$((X*2))\n') });
    await r2.waitFor((items) => /again-82/.test(out(items)), 5000, 'output after re-attach (shell state kept)');

    await rejects(c.ptyResize({ sandboxId: id, tag, cols: 0, rows: 10 }), Code.InvalidArgument, /cols/);
    await rejects(c.ptySendInput({ sandboxId: id, tag: '../x', data: Buffer.from('x') }), Code.InvalidArgument, /tag/);

    await c.ptyKill({ sandboxId: id, tag });
    await r2.waitFor((items) => items.some((i) => i.event.case === 'exited'), 5000, 'exited after PtyKill');
    await r2.finished;
    await rejects(c.ptySendInput({ sandboxId: id, tag, data: Buffer.from('x') }), Code.NotFound);
  });

  test('pause/resume: a background counter keeps its state; paused capsules refuse work', async () => {
    await c.startBackground({
      sandboxId: id,
      ...sh('i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done'),
      tag: 'counter',
    });
    const read = async () => Number(text((await c.readFile({ sandboxId: id, path: '/tmp/counter' })).content));
    await waitUntil(async () => (await read().catch(() => 0)) > 5, 5000, 'counter running');
    const pid = (await c.listProcesses({ sandboxId: id })).processes.find((p) => p.tag === 'counter')!.pid;

    const beforePause = await read();
    await c.pauseSandbox({ sandboxId: id });
    const list = await c.listSandboxes({});
    assert.equal(list.sandboxes.find((s) => s.sandboxId === id)?.status, 'paused');
    await rejects(c.exec({ sandboxId: id, cmd: 'true' }), Code.FailedPrecondition, /paused/);
    await rejects(c.readFile({ sandboxId: id, path: '/tmp/counter' }), Code.FailedPrecondition, /paused/);
    await rejects(c.pingSandbox({ sandboxId: id }), Code.FailedPrecondition, /paused/);
    await rejects(c.pauseSandbox({ sandboxId: id }), Code.FailedPrecondition, /already paused/);
    assert.equal((await c.hostInfo({})).pausedSandboxes, 1);

    await new Promise((r) => setTimeout(r, 2000));
    await c.resumeSandbox({ sandboxId: id, timeoutSec: 0 });
    const afterResume = await read();
    // The shell variable survived (no restart from 0) and did not advance while frozen:
    // running, it would have counted ~40 more in those 2 s.
    assert.ok(afterResume >= beforePause, `${afterResume} >= ${beforePause}`);
    assert.ok(afterResume - beforePause < 15, `frozen while paused (${beforePause} -> ${afterResume})`);
    await waitUntil(async () => (await read()) > afterResume + 5, 5000, 'counter moving again');
    const procs = await c.listProcesses({ sandboxId: id });
    assert.equal(procs.processes.find((p) => p.tag === 'counter')?.pid, pid, 'same process after resume');
    await rejects(c.resumeSandbox({ sandboxId: id, timeoutSec: 0 }), Code.FailedPrecondition, /not paused/);
    await c.killProcess({ sandboxId: id, selector: { case: 'tag', value: 'counter' } });
  });

  test('metrics: points appear, ranges, bad range, flush', async () => {
    await c.exec({ sandboxId: id, ...sh('i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done') });
    await waitUntil(
      async () => (await c.getSandboxMetrics({ sandboxId: id, range: '5m' })).points.length >= 3,
      10_000,
      'metric points',
    );
    const m = await c.getSandboxMetrics({ sandboxId: id, range: '10m' });
    const now = BigInt(Math.floor(Date.now() / 1000));
    for (const p of m.points) {
      assert.ok(p.cpuPct >= 0 && p.cpuPct <= 100);
      assert.ok(p.memBytes > 0n, 'memory in use');
      assert.ok(p.diskBytes >= 0n);
      assert.ok(p.timestampUnix <= now && p.timestampUnix > now - 700n);
    }
    assert.equal((await c.getSandboxMetrics({ sandboxId: id, range: '1h' })).points.length, 0, 'no 30 s average yet');
    await rejects(c.getSandboxMetrics({ sandboxId: id, range: '3h' }), Code.InvalidArgument, /range must be one of/);
    await rejects(c.getSandboxMetrics({ sandboxId: newCapsuleId(), range: '5m' }), Code.NotFound);

    const f = await c.flushSandboxMetrics({ sandboxId: id });
    assert.ok(f.points10m.length >= 3);
    assert.equal(f.points2h.length, 0);
    assert.equal(f.points24h.length, 0);
    assert.ok((await c.getSandboxMetrics({ sandboxId: id, range: '10m' })).points.length < f.points10m.length);

    // No sampling while paused; it starts again on resume.
    const count = async () => (await c.getSandboxMetrics({ sandboxId: id, range: '10m' })).points.length;
    await c.pauseSandbox({ sandboxId: id });
    const whilePaused = await count();
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await count(), whilePaused, 'no points while paused');
    await c.resumeSandbox({ sandboxId: id, timeoutSec: 0 });
    await waitUntil(async () => (await count()) > whilePaused, 5000, 'points again after resume');
  });

  test('edge validation: ids, templates, resources, fields', async () => {
    const base = { sandboxId: newCapsuleId(), template: 'minimal' };
    await rejects(
      c.createSandbox({ ...base, sandboxId: 'bogus' }),
      Code.InvalidArgument,
      /sandbox_id must be a capsule id/,
    );
    await rejects(c.createSandbox({ ...base, sandboxId: '' }), Code.InvalidArgument, /sandbox_id is required/);
    await rejects(c.createSandbox({ ...base, template: '../etc' }), Code.InvalidArgument, /not a valid template name/);
    await rejects(c.createSandbox({ ...base, template: 'a/b' }), Code.InvalidArgument, /not a valid template name/);
    await rejects(c.createSandbox({ ...base, template: '..' }), Code.InvalidArgument, /not a valid template name/);
    await rejects(c.createSandbox({ ...base, teamId: 'nope' }), Code.InvalidArgument, /team_id must be a UUID/);
    await rejects(c.createSandbox({ ...base, vcpus: -1 }), Code.InvalidArgument, /vcpus must be between 1 and/);
    await rejects(c.createSandbox({ ...base, vcpus: 4096 }), Code.InvalidArgument, /vcpus/);
    await rejects(c.createSandbox({ ...base, memoryMb: 64 }), Code.InvalidArgument, /memory_mb must be between 128/);
    await rejects(c.createSandbox({ ...base, memoryMb: 2_000_000_000 }), Code.InvalidArgument, /memory_mb/);
    await rejects(c.createSandbox({ ...base, diskSizeMb: -5 }), Code.InvalidArgument, /disk_size_mb/);
    await rejects(c.createSandbox({ ...base, diskSizeMb: 10_000_000 }), Code.InvalidArgument, /disk_size_mb/);
    await rejects(c.createSandbox({ ...base, timeoutSec: -1 }), Code.InvalidArgument, /timeout_sec/);
    await rejects(c.createSandbox({ ...base, defaultUser: 'Bad User' }), Code.InvalidArgument, /default_user/);
    await rejects(c.createSandbox({ ...base, defaultEnv: { 'A-B': 'x' } }), Code.InvalidArgument, /default_env/);
    await rejects(
      c.createSandbox({ ...base, template: 'nonexistent' }),
      Code.NotFound,
      /template "nonexistent" not found/,
    );
    await rejects(
      c.createSandbox({
        ...base,
        template: 'custom',
        teamId: '11111111-2222-3333-4444-555555555555',
        templateId: '99999999-2222-3333-4444-555555555555',
      }),
      Code.NotFound,
      /not found on this host/,
    );
    await rejects(c.createSandbox({ ...base, sandboxId: id }), Code.AlreadyExists, /already exists/);

    const unknown = newCapsuleId();
    await rejects(c.exec({ sandboxId: unknown, cmd: 'true' }), Code.NotFound, /not found/);
    await rejects(c.destroySandbox({ sandboxId: unknown }), Code.NotFound);
    await rejects(c.pauseSandbox({ sandboxId: unknown }), Code.NotFound);
    await rejects(c.resumeSandbox({ sandboxId: unknown }), Code.NotFound);
    await rejects(c.pingSandbox({ sandboxId: unknown }), Code.NotFound);
    await rejects(c.setSandboxTimeout({ sandboxId: unknown, timeoutSec: 5 }), Code.NotFound);
    await rejects(c.setSandboxTimeout({ sandboxId: id, timeoutSec: -1 }), Code.InvalidArgument, /timeout_sec/);
    await rejects(c.flushSandboxMetrics({ sandboxId: unknown }), Code.NotFound);
    await rejects(c.exec({ sandboxId: 'cl-../../etc', cmd: 'true' }), Code.InvalidArgument);
    await rejects(c.exec({ sandboxId: id, cmd: '' }), Code.InvalidArgument, /cmd is required/);
    await rejects(c.readFile({ sandboxId: id, path: 'a\0b' }), Code.InvalidArgument, /NUL/);
    await rejects(c.exec({ sandboxId: id, cmd: 'true', user: 'root;rm' }), Code.InvalidArgument, /user/);
    await rejects(c.exec({ sandboxId: id, cmd: 'true', timeoutSec: -3 }), Code.InvalidArgument, /timeout_sec/);

    // Snapshots and flattened templates need a name and a template id (agent-snapshots.test.ts covers them).
    await rejects(c.createSnapshot({ sandboxId: id }), Code.InvalidArgument, /name is required/);
    await rejects(c.deleteSnapshot({ name: 'x' }), Code.InvalidArgument, /template_id/);
    await rejects(c.flattenRootfs({ sandboxId: id }), Code.InvalidArgument, /name is required/);
    await rejects(c.flattenRootfs({ sandboxId: id, name: 'x' }), Code.InvalidArgument, /template_id/);
    // Nothing was created by any of the rejected calls.
    const list = await c.listSandboxes({});
    assert.deepEqual(
      list.sandboxes.map((s) => s.sandboxId),
      [id],
    );
  });

  test('ListSandboxes describes the capsule', async () => {
    const list = await c.listSandboxes({});
    const s = list.sandboxes.find((x) => x.sandboxId === id)!;
    assert.equal(s.status, 'running');
    assert.equal(s.template, 'minimal');
    assert.equal(s.vcpus, 1);
    assert.equal(s.memoryMb, 512);
    assert.equal(s.diskSizeMb, 1024);
    assert.equal(s.teamId, '00000000-0000-0000-0000-000000000000');
    assert.ok(s.createdAtUnix > 0n && s.lastActiveAtUnix >= s.createdAtUnix);
    assert.equal(s.metadata.runtime, 'container');
  });
  test('disks: creates take ready spare copies; each capsule gets a fresh disk of its own size', async () => {
    const spareDir = `${agent.dataDir}/cache/disks/spare`;
    const spares = () =>
      fs.existsSync(spareDir) ? fs.readdirSync(spareDir).filter((f) => f.startsWith('ext4-320M-')) : [];
    const make = async () => {
      const x = newCapsuleId();
      await c.createSandbox({ sandboxId: x, template: 'minimal', memoryMb: 128, diskSizeMb: 320 });
      return x;
    };
    const first = await make();
    // The first create of a size copies now, then spares of that size are made in the background.
    await waitUntil(async () => spares().filter((f) => f.endsWith('.img')).length === 2, 10_000, 'two spare disks');
    const ready = spares();
    await c.exec({ sandboxId: first, ...sh('echo mine > /root/marker') });
    await c.destroySandbox({ sandboxId: first });
    const second = await make();
    // One spare was moved into the capsule (and is being replaced).
    assert.ok(
      ready.some((f) => !spares().includes(f)),
      'a spare was taken',
    );
    const r = await c.exec({ sandboxId: second, ...sh('test -e /root/marker && echo leaked; df -m / | tail -1') });
    assert.doesNotMatch(text(r.stdout), /leaked/);
    const sizeMb = Number(text(r.stdout).trim().split(/\s+/)[1]);
    assert.ok(sizeMb > 250 && sizeMb <= 320, `the disk is the capsule's own 320 MiB (df says ${sizeMb} MiB)`);
    await c.destroySandbox({ sandboxId: second });
  });

  test('TTL: idle capsules are auto-paused and reported once; ping resets the timer; timeout survives resume', async () => {
    const a = newCapsuleId();
    const b = newCapsuleId();
    await c.createSandbox({ sandboxId: a, template: 'minimal', timeoutSec: 2 });
    await c.createSandbox({ sandboxId: b, template: 'minimal', timeoutSec: 3 });
    const reported: string[] = [];
    const status = async (x: string) => {
      const l = await c.listSandboxes({});
      reported.push(...l.autoPausedSandboxIds);
      return l.sandboxes.find((s) => s.sandboxId === x)?.status;
    };
    try {
      // b is pinged every 500 ms while a goes idle.
      let aPausedAt = 0;
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline && !(aPausedAt && Date.now() - aPausedAt > 4000)) {
        await c.pingSandbox({ sandboxId: b });
        if (!aPausedAt && (await status(a)) === 'paused') aPausedAt = Date.now();
        await new Promise((r) => setTimeout(r, 500));
      }
      assert.ok(aPausedAt, 'a was auto-paused');
      assert.equal(await status(b), 'running', 'pings kept b running');
      assert.deepEqual(
        reported.filter((x) => x === a),
        [a],
        'a reported exactly once',
      );
      assert.ok(!reported.includes(b));

      // No more pings: b pauses too.
      await waitUntil(async () => (await status(b)) === 'paused', 10_000, 'b auto-paused');
      assert.deepEqual(
        reported.filter((x) => x === b),
        [b],
      );

      // The timeout comes back with ResumeSandbox: b pauses again when idle.
      await c.resumeSandbox({ sandboxId: b, timeoutSec: 2 });
      assert.equal(await status(b), 'running');
      const r = await c.exec({ sandboxId: b, cmd: 'echo', args: ['alive'] });
      assert.equal(text(r.stdout), 'alive\n');
      await waitUntil(async () => (await status(b)) === 'paused', 10_000, 'b auto-paused again after resume');
      const info = (await c.listSandboxes({})).sandboxes.find((s) => s.sandboxId === b)!;
      assert.equal(info.timeoutSec, 2);

      // SetSandboxTimeout: a running capsule created without a timeout is paused after its new one.
      const x = newCapsuleId();
      await c.createSandbox({ sandboxId: x, template: 'minimal', timeoutSec: 0 });
      try {
        await c.setSandboxTimeout({ sandboxId: x, timeoutSec: 2 });
        assert.equal((await c.listSandboxes({})).sandboxes.find((s) => s.sandboxId === x)!.timeoutSec, 2);
        await waitUntil(async () => (await status(x)) === 'paused', 10_000, 'x auto-paused after SetSandboxTimeout');
      } finally {
        await c.destroySandbox({ sandboxId: x });
      }
    } finally {
      // Destroying paused capsules works.
      await c.destroySandbox({ sandboxId: a });
      await c.destroySandbox({ sandboxId: b });
    }
    assert.deepEqual(
      (await c.listSandboxes({})).sandboxes.map((s) => s.sandboxId),
      [id],
    );
  });
});
