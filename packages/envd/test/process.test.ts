// process.Process against a real envd child process, through real Connect clients.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Code, ConnectError } from '@connectrpc/connect';
import { create } from '@bufbuild/protobuf';
import {
  Signal,
  StreamInputRequestSchema,
  type StartResponse,
  type ConnectResponse,
} from '@wrenn/contracts/gen/process/process_pb';
import {
  as,
  clients,
  collect,
  createUser,
  pidAlive,
  startEnvd,
  tempDir,
  waitFor,
  type Clients,
  type Collected,
  type Envd,
  type TestUser,
} from './helpers.js';

async function rejectsWith(p: Promise<unknown> | AsyncIterable<unknown>, code: Code, re?: RegExp): Promise<void> {
  const run = async () => {
    if (Symbol.asyncIterator in Object(p)) {
      for await (const _ of p as AsyncIterable<unknown>) {
        // drain
      }
    } else {
      await p;
    }
  };
  await assert.rejects(run(), (err: unknown) => {
    assert.ok(err instanceof ConnectError, `expected ConnectError, got ${String(err)}`);
    assert.equal(Code[err.code], Code[code], err.message);
    if (re) assert.match(err.message, re);
    return true;
  });
}

/** Reads a stream in the background, exposing what has arrived so far. */
function follow(stream: AsyncIterable<StartResponse | ConnectResponse>) {
  const state: Collected & { done: Promise<void>; error?: unknown } = {
    pid: undefined,
    stdout: Buffer.alloc(0),
    stderr: Buffer.alloc(0),
    pty: Buffer.alloc(0),
    end: undefined,
    keepalives: 0,
    order: [],
    done: Promise.resolve(),
  };
  state.done = (async () => {
    try {
      const c = await collect(
        (async function* () {
          for await (const msg of stream) {
            const ev = msg.event?.event;
            if (ev?.case === 'start') state.pid = ev.value.pid;
            if (ev?.case === 'data' && ev.value.output.case) {
              const k = ev.value.output.case;
              state[k] = Buffer.concat([state[k], ev.value.output.value]);
            }
            yield msg;
          }
        })(),
      );
      state.end = c.end;
      state.keepalives = c.keepalives;
      state.order = c.order;
    } catch (err) {
      state.error = err;
    }
  })();
  return state;
}

describe('envd process service', () => {
  let envd: Envd;
  let c: Clients;
  let c2: Clients;
  let user: TestUser;
  let tmp: string;

  before(async () => {
    envd = await startEnvd(['--keepalive-ms', '100']);
    c = clients(envd.baseUrl, '1.1');
    c2 = clients(envd.baseUrl, '2');
    user = createUser();
    tmp = tempDir();
  });

  after(async () => {
    await envd.stop();
    user.remove();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('runs a command with pipes: stdout, stderr, exit code', async () => {
    const r = await collect(
      c.process.start({ process: { cmd: 'sh', args: ['-c', 'printf out; printf err >&2; exit 3'] } }),
    );
    assert.ok(r.pid && r.pid > 0);
    assert.equal(r.order[0], 'start');
    assert.equal(r.order.at(-1), 'end');
    assert.equal(r.stdout.toString(), 'out');
    assert.equal(r.stderr.toString(), 'err');
    assert.deepEqual(
      { exitCode: r.end?.exitCode, exited: r.end?.exited, status: r.end?.status, error: r.end?.error },
      { exitCode: 3, exited: true, status: 'exit status 3', error: 'exit status 3' },
    );
    const ok = await collect(c.process.start({ process: { cmd: 'true' } }));
    assert.equal(ok.end?.exitCode, 0);
    assert.equal(ok.end?.status, 'exit status 0');
    assert.equal(ok.end?.error, undefined);
  });

  it('passes output through byte for byte (binary safe)', async () => {
    const file = path.join(tmp, 'bin');
    const data = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(300_000)]);
    fs.writeFileSync(file, data);
    const r = await collect(c.process.start({ process: { cmd: 'cat', args: [file] } }));
    assert.equal(r.stdout.length, data.length);
    assert.ok(r.stdout.equals(data));
  });

  it('sets env, cwd and the user environment; cwd must exist', async () => {
    const r = await collect(
      c.process.start({
        process: {
          cmd: 'sh',
          args: ['-c', 'echo "$FOO|$HOME|$USER|$LOGNAME|$(pwd)|$PATH"'],
          envs: { FOO: 'bar baz' },
          cwd: tmp,
        },
      }),
    );
    const [foo, home, usr, logname, cwd, pathVar] = r.stdout.toString().trim().split('|');
    assert.equal(foo, 'bar baz');
    assert.equal(home, '/root');
    assert.equal(usr, 'root');
    assert.equal(logname, 'root');
    assert.equal(cwd, fs.realpathSync(tmp));
    assert.match(pathVar ?? '', /\/usr\/bin/);
    // Default cwd is the user's home.
    const home2 = await collect(c.process.start({ process: { cmd: 'pwd' } }));
    assert.equal(home2.stdout.toString().trim(), '/root');
    await rejectsWith(
      c.process.start({ process: { cmd: 'true', cwd: path.join(tmp, 'missing') } }),
      Code.InvalidArgument,
      /cwd/,
    );
    await rejectsWith(c.process.start({ process: { cmd: 'no-such-command-xyz' } }), Code.InvalidArgument, /not found/);
    await rejectsWith(c.process.start({ process: { cmd: '' } }), Code.InvalidArgument);
  });

  it('runs as another user with its uid, groups, home and environment', async () => {
    const r = await collect(
      c.process.start(
        { process: { cmd: 'sh', args: ['-c', 'id -u; id -G; echo "$HOME|$USER"; pwd; touch made-here'] } },
        as(user.name),
      ),
    );
    assert.equal(r.end?.exitCode, 0, r.stderr.toString());
    const [uid, groups, env, cwd] = r.stdout.toString().trim().split('\n');
    assert.equal(Number(uid), user.uid);
    const gids = (groups ?? '').split(' ').map(Number);
    assert.ok(gids.includes(user.gid));
    assert.ok(gids.includes(user.extraGid), `supplementary group missing: ${groups}`);
    assert.ok(!gids.includes(0), 'root group leaked into the user process');
    assert.equal(env, `${user.home}|${user.name}`);
    assert.equal(cwd, user.home);
    assert.equal(fs.statSync(path.join(user.home, 'made-here')).uid, user.uid);
    // The user cannot use a cwd it may not enter.
    await rejectsWith(
      c.process.start({ process: { cmd: 'true', cwd: '/root' } }, as(user.name)),
      Code.PermissionDenied,
    );
    // Unknown users are refused.
    await rejectsWith(c.process.start({ process: { cmd: 'true' } }, as('no-such-user-xyz')), Code.Unauthenticated);
  });

  it('runs a PTY: output, input, TERM and resize visible to stty', async () => {
    const s = follow(
      c.process.start({ process: { cmd: '/bin/sh', envs: { PS1: '$ ' } }, pty: { size: { cols: 100, rows: 30 } } }),
    );
    const pid = await waitFor(() => s.pid, 5000, 'pty start');
    const input = (text: string) =>
      c.process.sendInput({
        process: { selector: { case: 'pid', value: pid } },
        input: { input: { case: 'pty', value: Buffer.from(text) } },
      });
    await input('stty size; echo "term=$TERM"\n');
    await waitFor(
      () => /30 100/.test(s.pty.toString()) && /term=xterm-256color/.test(s.pty.toString()),
      5000,
      'stty size',
    );
    await c.process.update({
      process: { selector: { case: 'pid', value: pid } },
      pty: { size: { cols: 120, rows: 40 } },
    });
    await input('stty size\n');
    await waitFor(() => /40 120/.test(s.pty.toString()), 5000, 'resized stty size');
    // A PTY takes Ctrl+D, not CloseStdin; stdin bytes are refused.
    await rejectsWith(
      c.process.closeStdin({ process: { selector: { case: 'pid', value: pid } } }),
      Code.FailedPrecondition,
      /Ctrl\+D/,
    );
    await rejectsWith(
      c.process.sendInput({
        process: { selector: { case: 'pid', value: pid } },
        input: { input: { case: 'stdin', value: Buffer.from('x') } },
      }),
      Code.FailedPrecondition,
    );
    await input('exit 7\n');
    await s.done;
    assert.equal(s.error, undefined);
    assert.equal(s.end?.exitCode, 7);
  });

  it('runs a PTY as another user', async () => {
    const r = follow(
      c.process.start(
        {
          process: { cmd: 'sh', args: ['-c', 'id -u; id -G; tty; stat -c %U "$(tty)"'] },
          pty: { size: { cols: 80, rows: 24 } },
        },
        as(user.name),
      ),
    );
    await r.done;
    assert.equal(r.end?.exitCode, 0);
    const [uid, groups, tty, ttyOwner] = r.pty.toString().trim().split(/\r?\n/);
    assert.equal(Number(uid), user.uid);
    assert.deepEqual((groups ?? '').split(' ').map(Number).sort(), [user.gid, user.extraGid].sort());
    assert.match(tty ?? '', /^\/dev\/pts\/\d+$/);
    assert.equal(ttyOwner, user.name);
  });

  it('keeps a process across disconnects and reconnects by tag; lists it while it runs', async () => {
    const tag = 'job-' + randomBytes(3).toString('hex');
    const ac = new AbortController();
    const first = c.process.start(
      { process: { cmd: 'sh', args: ['-c', 'read line; echo "got:$line"'] }, tag, stdin: true },
      { signal: ac.signal },
    );
    let pid = 0;
    for await (const msg of first) {
      if (msg.event?.event.case === 'start') {
        pid = msg.event.event.value.pid;
        break;
      }
    }
    ac.abort();
    assert.ok(pid > 0);
    await rejectsWith(c.process.start({ process: { cmd: 'true' }, tag }), Code.AlreadyExists);
    const list = await c.process.list({});
    const info = list.processes.find((p) => p.tag === tag);
    assert.ok(info, 'tagged process missing from List');
    assert.equal(info.pid, pid);
    assert.equal(info.config?.cmd, 'sh');
    assert.deepEqual(info.config?.args, ['-c', 'read line; echo "got:$line"']);
    assert.ok(pidAlive(pid), 'process died with its stream');

    const again = follow(c.process.connect({ process: { selector: { case: 'tag', value: tag } } }));
    await waitFor(() => again.pid, 5000, 'reconnect start');
    assert.equal(again.pid, pid);
    await c.process.sendInput({
      process: { selector: { case: 'tag', value: tag } },
      input: { input: { case: 'stdin', value: Buffer.from('hello\n') } },
    });
    await again.done;
    assert.equal(again.stdout.toString(), 'got:hello\n');
    assert.equal(again.end?.exitCode, 0);
    await waitFor(
      async () => !(await c.process.list({})).processes.some((p) => p.tag === tag),
      2000,
      'removal from list',
    );
    await rejectsWith(c.process.connect({ process: { selector: { case: 'tag', value: tag } } }), Code.NotFound);
  });

  it('signals the whole process group', async () => {
    const s = follow(c.process.start({ process: { cmd: 'sh', args: ['-c', 'sleep 1000 & echo $!; wait'] } }));
    const child = Number(await waitFor(() => s.stdout.toString().trim(), 5000, 'grandchild pid'));
    assert.ok(pidAlive(child));
    await c.process.sendSignal({
      process: { selector: { case: 'pid', value: s.pid as number } },
      signal: Signal.SIGTERM,
    });
    await s.done;
    assert.deepEqual(
      { exitCode: s.end?.exitCode, exited: s.end?.exited, status: s.end?.status },
      { exitCode: -1, exited: false, status: 'signal: terminated' },
    );
    await waitFor(() => !pidAlive(child), 5000, 'grandchild to die');

    const k = follow(c.process.start({ process: { cmd: 'sleep', args: ['1000'] } }));
    await waitFor(() => k.pid, 5000, 'start');
    await rejectsWith(
      c.process.sendSignal({
        process: { selector: { case: 'pid', value: k.pid as number } },
        signal: Signal.UNSPECIFIED,
      }),
      Code.InvalidArgument,
    );
    await c.process.sendSignal({
      process: { selector: { case: 'pid', value: k.pid as number } },
      signal: Signal.SIGKILL,
    });
    await k.done;
    assert.equal(k.end?.status, 'signal: killed');
  });

  it('closes stdin: cat sees EOF and exits; stdin=false gives /dev/null', async () => {
    const s = follow(c.process.start({ process: { cmd: 'cat' }, stdin: true }));
    const pid = await waitFor(() => s.pid, 5000, 'start');
    const sel = { selector: { case: 'pid' as const, value: pid } };
    await c.process.sendInput({ process: sel, input: { input: { case: 'stdin', value: Buffer.from('abc') } } });
    await waitFor(() => s.stdout.toString() === 'abc', 5000, 'echo');
    await c.process.closeStdin({ process: sel });
    await s.done;
    assert.equal(s.end?.exitCode, 0);

    const n = await collect(c.process.start({ process: { cmd: 'cat' }, stdin: false }));
    assert.equal(n.end?.exitCode, 0);
    assert.equal(n.stdout.length, 0);
  });

  it('keeps StreamInput data in order (h2c client stream)', async () => {
    const s = follow(c2.process.start({ process: { cmd: 'cat' }, stdin: true }));
    const pid = await waitFor(() => s.pid, 5000, 'start');
    const lines = Array.from({ length: 300 }, (_, i) => `line ${i}\n`);
    async function* input() {
      yield create(StreamInputRequestSchema, {
        event: { case: 'start', value: { process: { selector: { case: 'pid', value: pid } } } },
      });
      yield create(StreamInputRequestSchema, { event: { case: 'keepalive', value: {} } });
      for (const l of lines) {
        yield create(StreamInputRequestSchema, {
          event: { case: 'data', value: { input: { input: { case: 'stdin', value: Buffer.from(l) } } } },
        });
      }
    }
    await c2.process.streamInput(input());
    await c2.process.closeStdin({ process: { selector: { case: 'pid', value: pid } } });
    await s.done;
    assert.equal(s.stdout.toString(), lines.join(''));

    // Data before start is refused.
    async function* bad() {
      yield create(StreamInputRequestSchema, {
        event: { case: 'data', value: { input: { input: { case: 'stdin', value: Buffer.from('x') } } } },
      });
    }
    await rejectsWith(c2.process.streamInput(bad()), Code.InvalidArgument, /start/);
  });

  it('serves unary and server-streaming calls over h2c too', async () => {
    const r = await collect(c2.process.start({ process: { cmd: 'echo', args: ['over h2'] } }));
    assert.equal(r.stdout.toString(), 'over h2\n');
    assert.ok(Array.isArray((await c2.process.list({})).processes));
  });

  it('answers NotFound for unknown processes', async () => {
    const sel = { selector: { case: 'pid' as const, value: 999_999 } };
    await rejectsWith(c.process.connect({ process: sel }), Code.NotFound);
    await rejectsWith(
      c.process.sendInput({ process: sel, input: { input: { case: 'stdin', value: Buffer.from('x') } } }),
      Code.NotFound,
    );
    await rejectsWith(c.process.sendSignal({ process: sel, signal: Signal.SIGKILL }), Code.NotFound);
    await rejectsWith(c.process.closeStdin({ process: { selector: { case: 'tag', value: 'nope' } } }), Code.NotFound);
    await rejectsWith(c.process.update({ process: sel }), Code.NotFound);
  });

  it('sends keepalives while a stream is idle', async () => {
    const r = await collect(c.process.start({ process: { cmd: 'sleep', args: ['0.6'] } }));
    assert.ok(r.keepalives >= 2, `only ${r.keepalives} keepalives`);
    assert.equal(r.end?.exitCode, 0);
  });

  it('kills the process when the request deadline passes', async () => {
    let pid = 0;
    await rejectsWith(
      (async function* () {
        for await (const m of c.process.start({ process: { cmd: 'sleep', args: ['1000'] } }, { timeoutMs: 400 })) {
          if (m.event?.event.case === 'start') pid = m.event.event.value.pid;
          yield m;
        }
      })(),
      Code.DeadlineExceeded,
    );
    assert.ok(pid > 0);
    await waitFor(() => !pidAlive(pid), 5000, 'process killed at deadline');
  });

  it('fans output out to several subscribers; a stalled one blocks nobody and is not buffered', async (t) => {
    const tag = 'fan-' + randomBytes(3).toString('hex');
    const total = 128 * 1024 * 1024;
    // Readers that count bytes (not keep them): the test process must stay light.
    const count = (stream: AsyncIterable<StartResponse | ConnectResponse>) => {
      const r = {
        pid: 0,
        stdout: 0,
        stderr: '',
        end: undefined as undefined | { exitCode: number },
        done: Promise.resolve(),
      };
      r.done = (async () => {
        for await (const m of stream) {
          const ev = m.event?.event;
          if (ev?.case === 'start') r.pid = ev.value.pid;
          if (ev?.case === 'end') r.end = ev.value;
          if (ev?.case === 'data' && ev.value.output.case === 'stdout') r.stdout += ev.value.output.value.length;
          if (ev?.case === 'data' && ev.value.output.case === 'stderr')
            r.stderr += Buffer.from(ev.value.output.value).toString();
        }
      })();
      return r;
    };
    const starter = count(
      c.process.start({
        process: { cmd: 'sh', args: ['-c', `read go; head -c ${total} /dev/zero; echo done >&2`] },
        tag,
        stdin: true,
      }),
    );
    const pid = await waitFor(() => starter.pid, 5000, 'start');
    const reader = count(c.process.connect({ process: { selector: { case: 'tag', value: tag } } }));
    await waitFor(() => reader.pid, 5000, 'reader start');

    // A subscriber that never reads its response (raw Connect streaming request).
    const body = Buffer.from(JSON.stringify({ process: { tag } }));
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), body]);
    frame.writeUInt32BE(body.length, 1);
    const stalled = http.request(`${envd.baseUrl}/process.Process/Connect`, {
      method: 'POST',
      headers: { 'content-type': 'application/connect+json', 'connect-protocol-version': '1' },
    });
    const stalledRes = await new Promise<http.IncomingMessage>((resolve) => {
      stalled.on('response', resolve);
      stalled.end(frame);
    });
    stalledRes.pause();
    await new Promise((r) => setTimeout(r, 100));
    const envdPid = envd.child.pid as number;
    const rssBefore = vmKb(envdPid, 'VmRSS');
    fs.writeFileSync(`/proc/${envdPid}/clear_refs`, '5'); // resets VmHWM (peak RSS)

    await c.process.sendInput({
      process: { selector: { case: 'pid', value: pid } },
      input: { input: { case: 'stdin', value: Buffer.from('go\n') } },
    });
    await Promise.all([starter.done, reader.done]);
    // Readers that keep up lose nothing.
    assert.equal(starter.stdout, total);
    assert.equal(reader.stdout, total);
    assert.equal(reader.stderr, 'done\n');
    assert.equal(reader.end?.exitCode, 0);
    const grownKb = vmKb(envdPid, 'VmHWM') - rssBefore;
    t.diagnostic(`envd peak RSS growth: ${grownKb} KiB`);
    stalledRes.destroy();
    stalled.destroy();
    // The stalled subscriber missed 128 MiB; envd kept a bounded backlog for it
    // (what remains is garbage-collector slack, independent of the volume).
    assert.ok(grownKb < 96 * 1024, `envd peak RSS grew by ${grownKb} KiB`);
  });
});

function vmKb(pid: number, field: string): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
}
