#!/usr/bin/env node
// Drives a real envd with E2B's own JavaScript SDK, to check wire compatibility.
// The SDK is not a dependency of this repository; install it in a scratch
// directory and point E2B_SDK at it (run as root, after `npx tsc -b packages/envd`):
//   mkdir /tmp/e2b && (cd /tmp/e2b && npm init -y && npm install e2b@2.51.0)
//   E2B_SDK=/tmp/e2b/node_modules/e2b node packages/envd/scripts/e2b-compat.mjs
// It starts envd on a free port and uses the SDK's debug mode (no E2B API),
// with E2B_SANDBOX_URL pointing at that envd. Prints one line per check and
// exits non-zero if any failed. (The SDK runs commands in `bash -l`: a slow
// login profile on the machine shows up in every check's time.)
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';

const sdkDir = process.env.E2B_SDK;
if (!sdkDir) throw new Error('set E2B_SDK to the installed e2b package directory (see the header of this file)');
const main = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../dist/src/main.js');

const envd = spawn(process.execPath, [main, '--port', '0', '--host', '127.0.0.1'], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
const port = await new Promise((resolve) => {
  let out = '';
  envd.stdout.on('data', (d) => {
    out += d;
    const m = /listening on (\d+)/.exec(out);
    if (m) resolve(Number(m[1]));
  });
});
process.env.E2B_DEBUG = 'true';
process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${port}`;
const { Sandbox, FilesystemEventType } = await import(pathToFileURL(path.join(sdkDir, 'dist/index.mjs')).href);

let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log(`ok    ${name}`);
  } catch (err) {
    failed++;
    console.log(`FAIL  ${name}: ${err?.stack ?? err}`);
  }
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'e2b-compat-'));
fs.chmodSync(tmp, 0o777);
const sbx = await Sandbox.create();
try {
  await check('commands.run: stdout, stderr, exit code', async () => {
    const r = await sbx.commands.run('echo out; echo err >&2', { user: 'root' });
    assert.equal(r.stdout, 'out\n');
    assert.equal(r.stderr, 'err\n');
    assert.equal(r.exitCode, 0);
    await assert.rejects(sbx.commands.run('exit 3', { user: 'root' }), (e) => e.exitCode === 3);
  });
  await check('commands.run: envs, cwd, user', async () => {
    const r = await sbx.commands.run('echo "$FOO $(pwd) $(id -un)"', {
      envs: { FOO: 'bar' },
      cwd: tmp,
      user: 'nobody',
    });
    assert.equal(r.stdout, `bar ${tmp} nobody\n`);
  });
  await check('background command, list, connect, sendStdin, kill', async () => {
    const h = await sbx.commands.run('cat', { background: true, stdin: true, user: 'root' });
    assert.ok((await sbx.commands.list()).some((p) => p.pid === h.pid));
    let seen = '';
    const again = await sbx.commands.connect(h.pid, { onStdout: (d) => (seen += d) });
    await sbx.commands.sendStdin(h.pid, 'hello\n');
    for (let i = 0; i < 500 && !seen.includes('hello'); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(seen, 'hello\n');
    assert.equal(await sbx.commands.kill(h.pid), true);
    await again.wait().catch(() => {});
    assert.ok(!(await sbx.commands.list()).some((p) => p.pid === h.pid));
  });
  await check('files: write, read, exists, getInfo, list, makeDir, rename, remove', async () => {
    const f = path.join(tmp, 'dir/a.txt');
    await sbx.files.write(f, 'content', { user: 'root' });
    assert.equal(await sbx.files.read(f, { user: 'root' }), 'content');
    assert.equal(await sbx.files.exists(f, { user: 'root' }), true);
    const info = await sbx.files.getInfo(f, { user: 'root' });
    assert.equal(info.name, 'a.txt');
    assert.equal(info.type, 'file');
    assert.equal(info.size, 7);
    const list = await sbx.files.list(path.join(tmp, 'dir'), { user: 'root' });
    assert.deepEqual(
      list.map((e) => e.name),
      ['a.txt'],
    );
    assert.equal(await sbx.files.makeDir(path.join(tmp, 'made'), { user: 'root' }), true);
    assert.equal(await sbx.files.makeDir(path.join(tmp, 'made'), { user: 'root' }), false);
    await sbx.files.rename(f, path.join(tmp, 'b.txt'), { user: 'root' });
    assert.equal(await sbx.files.exists(f, { user: 'root' }), false);
    await sbx.files.remove(path.join(tmp, 'b.txt'), { user: 'root' });
    assert.equal(await sbx.files.exists(path.join(tmp, 'b.txt'), { user: 'root' }), false);
  });
  await check('files.watchDir', async () => {
    const events = [];
    const w = await sbx.files.watchDir(tmp, (e) => events.push(e), { user: 'root' });
    fs.writeFileSync(path.join(tmp, 'watched.txt'), 'x');
    for (let i = 0; i < 500 && !events.some((e) => e.name === 'watched.txt'); i++)
      await new Promise((r) => setTimeout(r, 20));
    await w.stop();
    assert.ok(
      events.some((e) => e.name === 'watched.txt' && e.type === FilesystemEventType.CREATE),
      JSON.stringify(events),
    );
  });
  await check('pty: create, sendInput, resize, kill', async () => {
    let out = '';
    const h = await sbx.pty.create({
      cols: 80,
      rows: 24,
      onData: (d) => (out += new TextDecoder().decode(d)),
      user: 'root',
    });
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size\n'));
    for (let i = 0; i < 500 && !out.includes('24 80'); i++) await new Promise((r) => setTimeout(r, 20));
    await sbx.pty.resize(h.pid, { cols: 100, rows: 30 });
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size\n'));
    for (let i = 0; i < 500 && !out.includes('30 100'); i++) await new Promise((r) => setTimeout(r, 20));
    assert.match(out, /24 80/);
    assert.match(out, /30 100/);
    assert.equal(await sbx.pty.kill(h.pid), true);
  });
} finally {
  envd.kill('SIGTERM');
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
