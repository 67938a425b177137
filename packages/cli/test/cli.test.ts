// The `wrenn` CLI end to end: the real program (dist/src/main.js) spawned with
// WRENN_API_KEY / WRENN_BASE_URL against a real platform.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import pty from 'node-pty';
import { startPlatform, type Platform } from '@wrenn/testkit';

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/main.js');

let p: Platform;
let env: NodeJS.ProcessEnv;
let id: string;
let tmp: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function wrenn(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string | Buffer } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env: opts.env ?? env, stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}

/** Asserts a failure: one `wrenn: …` line on stderr matching `re`, nothing on stdout, a non-zero exit. */
function assertFails(r: Run, re: RegExp, code?: number): void {
  assert.notEqual(r.code, 0, JSON.stringify(r));
  if (code !== undefined) assert.equal(r.code, code, JSON.stringify(r));
  assert.equal(r.stdout, '');
  const lines = r.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `one line: ${JSON.stringify(r.stderr)}`);
  assert.match(lines[0] as string, /^wrenn: /);
  assert.match(lines[0] as string, re);
}

before(async () => {
  p = await startPlatform({ prefix: 'cli', subnetBase: '10.243', agents: 1 });
  const { WRENN_API_KEY: _k, WRENN_BASE_URL: _u, ...rest } = process.env;
  env = { ...rest, WRENN_API_KEY: p.apiKey, WRENN_BASE_URL: p.baseUrl };
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wrenn-cli-test-'));
  const r = await wrenn(['create', '--timeout', '10m', '-m', 'suite=cli']);
  assert.equal(r.code, 0, r.stderr);
  id = r.stdout.trim();
  assert.match(id, /^cl-[0-9a-z]{25}$/);
});

after(async () => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  await p?.stop();
});

describe('capsules', () => {
  test('list shows the capsule as a table and as JSON', async () => {
    const r = await wrenn(['list']);
    assert.equal(r.code, 0, r.stderr);
    const [header, ...rows] = r.stdout.trim().split('\n');
    assert.match(header ?? '', /^ID\s+STATUS\s+TEMPLATE\s+VCPUS\s+MEMORY\s+CREATED$/);
    assert.ok(
      rows.some((l) => new RegExp(`^${id}\\s+running\\s+minimal\\s+1\\s+`).test(l)),
      r.stdout,
    );
    const j = await wrenn(['list', '--json', '-m', 'suite=cli']);
    assert.equal(j.code, 0, j.stderr);
    const list = JSON.parse(j.stdout) as Array<{ id: string; status: string; metadata: Record<string, string> }>;
    assert.deepEqual(
      list.map((c) => [c.id, c.status, c.metadata.suite]),
      [[id, 'running', 'cli']],
    );
  });

  test('create --json with settings, info, pause, resume, destroy', async () => {
    const r = await wrenn(['create', '--json', '--vcpus', '2', '--memory', '1G', '--timeout', '90s']);
    assert.equal(r.code, 0, r.stderr);
    const c = JSON.parse(r.stdout) as {
      id: string;
      vcpus: number;
      memoryMb: number;
      timeoutSec: number;
      status: string;
    };
    assert.deepEqual([c.vcpus, c.memoryMb, c.timeoutSec, c.status], [2, 1024, 90, 'running']);

    const info = await wrenn(['info', c.id]);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, /^id\s+cl-/m);
    assert.match(info.stdout, /^memory\s+1 GiB$/m);

    const pause = await wrenn(['pause', c.id]);
    assert.equal(pause.stdout, `${c.id} paused\n`, pause.stderr);
    assertFails(await wrenn(['exec', c.id, '--', 'true']), /paused/);
    assertFails(await wrenn(['pause', c.id]), /paused|not running/);
    const resume = await wrenn(['resume', c.id]);
    assert.equal(resume.stdout, `${c.id} running\n`, resume.stderr);

    const destroy = await wrenn(['destroy', c.id]);
    assert.equal(destroy.code, 0, destroy.stderr);
    assertFails(await wrenn(['kill', c.id]), new RegExp(`capsule ${c.id} is already destroyed`), 1);
  });

  test('templates list prints the templates', async () => {
    const r = await wrenn(['templates', 'list']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^NAME\s+TYPE\s+VCPUS\s+MEMORY\s+SIZE\s+CREATED$/m);
    assert.match(r.stdout, /^minimal \(platform\)\s+base\s+-\s+-\s/m);
  });
});

describe('exec', () => {
  test('streams stdout and stderr and exits with the command’s code', async () => {
    const r = await wrenn(['exec', id, '--', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.deepEqual(r, { code: 7, stdout: 'out\n', stderr: 'err\n' });
  });

  test('one word is a shell line; env and cwd apply', async () => {
    const r = await wrenn(['exec', id, '-e', 'WHO=wrenn', '--cwd', '/tmp', '--', 'echo "$WHO in $(pwd)" | tr a-z A-Z']);
    assert.deepEqual(r, { code: 0, stdout: 'WRENN IN /TMP\n', stderr: '' });
  });

  test('options after -- belong to the command; without -- they are refused with a hint', async () => {
    const r = await wrenn(['exec', id, '--', 'ls', '-d', '/tmp']);
    assert.deepEqual(r, { code: 0, stdout: '/tmp\n', stderr: '' });
    assertFails(await wrenn(['exec', id, 'ls', '-d', '/tmp']), /unknown option '-d'.*after --/, 2);
  });
});

describe('files cp', () => {
  test('uploads and downloads a file, streamed, byte for byte', async () => {
    const src = path.join(tmp, 'up.bin');
    const data = randomBytes(6 * 1024 * 1024 + 123);
    fs.writeFileSync(src, data);
    const up = await wrenn(['files', 'cp', src, `${id}:/tmp/cli/`]);
    assert.equal(up.code, 0, up.stderr);
    const sum = await wrenn(['exec', id, '--', 'sha256sum /tmp/cli/up.bin']);
    assert.equal(sum.stdout.split(' ')[0], createHash('sha256').update(data).digest('hex'));

    const dir = path.join(tmp, 'down');
    fs.mkdirSync(dir);
    const down = await wrenn(['files', 'cp', `${id}:/tmp/cli/up.bin`, dir]);
    assert.equal(down.code, 0, down.stderr);
    assert.ok(fs.readFileSync(path.join(dir, 'up.bin')).equals(data));
  });

  test('stdin and stdout as "-"', async () => {
    const up = await wrenn(['files', 'cp', '-', `${id}:/tmp/cli/piped.txt`], { input: 'through a pipe\n' });
    assert.equal(up.code, 0, up.stderr);
    const down = await wrenn(['files', 'cp', `${id}:/tmp/cli/piped.txt`, '-']);
    assert.deepEqual(down, { code: 0, stdout: 'through a pipe\n', stderr: '' });
  });

  test('bad operands fail with one line', async () => {
    assertFails(await wrenn(['files', 'cp', 'a', 'b']), /one side of cp must be in a capsule/);
    assertFails(await wrenn(['files', 'cp', path.join(tmp, 'nope'), `${id}:/tmp/x`]), /no such file/);
    assertFails(await wrenn(['files', 'cp', `${id}:/no/such/file`, path.join(tmp, 'x')]), /not found|no such/i);
    assert.equal(fs.existsSync(path.join(tmp, 'x')), false, 'no partial file left');
  });
});

describe('shell', () => {
  test('interactive terminal: raw mode, resize, exit code, terminal restored', async () => {
    // A local shell in a terminal runs the CLI, so the terminal's modes can be read after it exits.
    const term = pty.spawn('/bin/bash', ['--norc', '--noprofile', '-i'], {
      name: 'xterm',
      cols: 90,
      rows: 25,
      env: { ...(env as Record<string, string>), PS1: '$ ' },
    });
    let out = '';
    term.onData((d) => (out += d));
    const waitFor = async (re: RegExp) => {
      const deadline = Date.now() + 20_000;
      while (!re.test(out)) {
        if (Date.now() > deadline)
          throw new Error(`timed out waiting for ${re}; got ${JSON.stringify(out.slice(-400))}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    try {
      term.write(`${process.execPath} ${MAIN} shell ${id}\r`);
      term.write('echo hi-$((1+1))\r');
      await waitFor(/hi-2/);
      term.write('stty size\r');
      await waitFor(/25 90/);
      term.resize(132, 43);
      await new Promise((r) => setTimeout(r, 300));
      term.write('stty size\r');
      await waitFor(/43 132/);
      // Raw mode: Ctrl-C reaches the remote shell (interrupting sleep) instead of killing the CLI.
      term.write('sleep 30\r');
      await new Promise((r) => setTimeout(r, 500));
      term.write('\x03');
      term.write('echo after-$((3*3))\r');
      await waitFor(/after-9/);
      term.write('exit 3\r');
      await waitFor(/exit 3[\s\S]*\n[^\n]*\$ $/);
      // Back in the local shell: the exit code, and the terminal out of raw mode.
      term.write(
        "echo \"rc=$? modes:$(stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ,)\"\r",
      );
      await waitFor(/rc=\d+ modes:[^\r\n]*\r?\n/);
      assert.match(out, /rc=3 modes:icanon,echo,/);
    } finally {
      term.kill();
    }
  });

  test('a capsule destroyed under the shell: one line, non-zero exit', async () => {
    const c = await wrenn(['create']);
    const victim = c.stdout.trim();
    const child = spawn(process.execPath, [MAIN, 'shell', victim], { env, stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const closed = new Promise<number | null>((r) => child.on('close', r));
    child.stdin.write('echo ready-$((5*5))\n');
    const deadline = Date.now() + 20_000;
    while (!/ready-25/.test(stdout) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.match(stdout, /ready-25/);
    const d = await wrenn(['destroy', victim]);
    assert.equal(d.code, 0, d.stderr);
    const code = await closed;
    assert.notEqual(code, 0);
    const lines = stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0] as string, /^wrenn: /);
  });

  test('piped input works without a terminal', async () => {
    const r = await wrenn(['shell', id], { input: 'echo piped-$((2*21))\nexit 4\n' });
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stdout, /piped-42/);
  });
});

describe('errors', () => {
  test('unknown capsule: one line, exit 1', async () => {
    const unknown = 'cl-' + '0'.repeat(24) + '1';
    for (const args of [
      ['exec', unknown, '--', 'true'],
      ['info', unknown],
      ['pause', unknown],
      ['shell', unknown],
      ['destroy', unknown],
    ]) {
      assertFails(await wrenn(args), new RegExp(`${unknown}.*not found|not found.*${unknown}`), 1);
    }
  });

  test('another team’s capsule is not found', async () => {
    const other = await p.newTeam();
    const r = await wrenn(['exec', id, '--', 'true'], { env: { ...env, WRENN_API_KEY: other.apiKey } });
    assertFails(r, /not found/, 1);
  });

  test('bad flags and missing arguments: one line, exit 2', async () => {
    assertFails(await wrenn(['create', '--vcpus', '0']), /--vcpus.*positive integer/, 2);
    assertFails(await wrenn(['create', '--memory', 'lots']), /--memory/, 2);
    assertFails(await wrenn(['create', '--timeout', '5 days']), /--timeout/, 2);
    assertFails(await wrenn(['create', '--bogus']), /unknown option '--bogus'/, 2);
    assertFails(await wrenn(['list', '--status', 'sleeping']), /--status/, 2);
    assertFails(await wrenn(['exec', id]), /missing required argument/, 2);
    assertFails(await wrenn(['frobnicate']), /unknown command 'frobnicate'/, 2);
  });

  test('server-side validation errors are one line', async () => {
    assertFails(await wrenn(['create', '--vcpus', '4096']), /vcpus/, 1);
  });

  test('missing API key or bad key or no server: one line', async () => {
    const { WRENN_API_KEY: _k, ...noKey } = env;
    assertFails(await wrenn(['list'], { env: noKey }), /WRENN_API_KEY is not set/, 1);
    assertFails(await wrenn(['list'], { env: { ...env, WRENN_API_KEY: 'wrn_' + '0'.repeat(32) } }), /./, 1);
    assertFails(await wrenn(['list'], { env: { ...env, WRENN_BASE_URL: 'http://127.0.0.1:1' } }), /cannot reach/, 1);
  });
});
