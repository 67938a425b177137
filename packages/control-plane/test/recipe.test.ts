// The recipe language and its shell quoting: pure functions, no platform.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import {
  expandEnv,
  parseDuration,
  parseHealthcheck,
  parseRecipe,
  RecipeError,
  shQuote,
  wrapCommand,
} from '../src/builds/recipe.js';
import { checkArchive } from '../src/builds/archive.js';
import tar from 'tar-stream';
import { buffer } from 'node:stream/consumers';
import yazl from 'yazl';

const sh = (script: string) => execFileSync('/bin/sh', ['-c', script], { encoding: 'utf8' });

describe('recipe parser', () => {
  test('every instruction, keywords in any case, blank and # lines skipped', () => {
    const steps = parseRecipe([
      'RUN apt-get install -y jq',
      'run --timeout=1m30s make all',
      '',
      '# a comment',
      'Env GREETING=hello $USER ${HOME} $$5',
      'WORKDIR app',
      'user dev-1',
      'COPY ./src//lib conf.json /opt/app/',
      'START python3 -m http.server 8000',
    ]);
    assert.deepEqual(
      steps.map((s) => [s.kind, s.line]),
      [
        ['RUN', 1],
        ['RUN', 2],
        ['ENV', 5],
        ['WORKDIR', 6],
        ['USER', 7],
        ['COPY', 8],
        ['START', 9],
      ],
    );
    assert.deepEqual(steps[0], {
      kind: 'RUN',
      line: 1,
      text: 'RUN apt-get install -y jq',
      cmd: 'apt-get install -y jq',
      timeoutMs: null,
    });
    assert.equal((steps[1] as { timeoutMs: number }).timeoutMs, 90_000);
    assert.deepEqual(steps[2], {
      kind: 'ENV',
      line: 5,
      text: 'Env GREETING=hello $USER ${HOME} $$5',
      key: 'GREETING',
      value: 'hello $USER ${HOME} $$5',
    });
    assert.deepEqual((steps[5] as { srcs: string[]; dst: string }).srcs, ['src/lib', 'conf.json']);
    assert.equal((steps[5] as { dst: string }).dst, '/opt/app/');
  });

  test('errors name the line', () => {
    const bad: [string[], RegExp][] = [
      [['RUN true', 'FROM debian'], /^recipe line 2: unknown instruction "FROM"/],
      [['RUN'], /^recipe line 1: RUN needs a command/],
      [['RUN --timeout=soon true'], /^recipe line 1: RUN --timeout must be a positive duration/],
      [['RUN --retries=3 true'], /^recipe line 1: RUN has no option --retries/],
      [['ENV 1X=a'], /^recipe line 1: "1X" is not a valid variable name/],
      [['ENV NOVALUE'], /^recipe line 1: ENV must look like KEY=VALUE/],
      [['ENV A=${B'], /^recipe line 1: ENV A: unclosed/],
      [['RUN true', 'RUN true', 'USER root;rm'], /^recipe line 3: USER needs a user name/],
      [['USER -x'], /^recipe line 1: USER needs/],
      [['COPY onlyone'], /^recipe line 1: COPY needs at least one source/],
      [['COPY ../etc/passwd /x'], /^recipe line 1: COPY source "..\/etc\/passwd" must be a path inside the archive/],
      [['COPY a/../../b /x'], /^recipe line 1: COPY source/],
      [['COPY /etc/passwd /x'], /^recipe line 1: COPY source "\/etc\/passwd"/],
      [['WORKDIR'], /^recipe line 1: WORKDIR needs a path/],
      [['START'], /^recipe line 1: START needs a command/],
      [['# only a comment'], /^recipe has no instructions/],
    ];
    for (const [lines, re] of bad) {
      assert.throws(
        () => parseRecipe(lines),
        (e: Error) => e instanceof RecipeError && re.test(e.message),
        lines[0],
      );
    }
  });

  test('durations are Go-style', () => {
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('1h2m3s'), 3_723_000);
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('1.5m'), 90_000);
    assert.equal(parseDuration('0'), 0);
    for (const s of ['', '10', 's', '1x', '1s ', '-1s']) assert.equal(parseDuration(s), null, s);
  });

  test('healthcheck flags and defaults', () => {
    assert.deepEqual(parseHealthcheck('curl -sf http://127.0.0.1:8000/'), {
      intervalMs: 3000,
      timeoutMs: 10_000,
      startPeriodMs: 0,
      retries: 0,
      cmd: 'curl -sf http://127.0.0.1:8000/',
    });
    assert.deepEqual(parseHealthcheck('--interval=5s --timeout=2s --start-period=1m --retries=4 test -f /x --y=1'), {
      intervalMs: 5000,
      timeoutMs: 2000,
      startPeriodMs: 60_000,
      retries: 4,
      cmd: 'test -f /x --y=1',
    });
    assert.throws(() => parseHealthcheck('--interval=5s'), /healthcheck: a command is required/);
    assert.throws(() => parseHealthcheck('--interval 5s true'), /--interval=<value>/);
    assert.throws(() => parseHealthcheck('--interval=0s true'), /--interval must be a duration/);
    assert.throws(() => parseHealthcheck('--retries=x true'), /--retries must be a whole number/);
    assert.throws(() => parseHealthcheck('--every=1s true'), /unknown option --every/);
  });

  test('ENV expansion: $VAR, ${VAR}, $$, unknown is empty', () => {
    const env = { HOME: '/root', A: 'x' };
    assert.equal(expandEnv('$HOME/bin:${A}y:$$:$NOPE:${NOPE}.$ 1', env), '/root/bin:xy:$::.$ 1');
  });
});

describe('shell quoting', () => {
  test('shQuote survives every awkward character through a real /bin/sh', () => {
    for (const s of ["it's", "'", "''a'", '$HOME `id` $(id) "q" \\ \n next', '', '-n']) {
      assert.equal(sh(`printf '%s' ${shQuote(s)}`), s);
    }
  });

  test('wrapCommand runs in the directory with the env, nothing expanded early', () => {
    const out = sh(
      wrapCommand({ user: 'root', workdir: '/tmp', env: { A: "it's $HOME", B: 'two words' } }, 'echo "$A|$B|$(pwd)"'),
    );
    assert.equal(out, "it's $HOME|two words|/tmp\n");
    const su = wrapCommand({ user: 'dev', workdir: '/srv', env: {} }, "echo 'x'");
    assert.match(su, /^su 'dev' -s \/bin\/sh -c '/);
    // In the background, with the env: the call returns at once and the process runs on.
    const out2 = `/tmp/wrenn-recipe-test-${process.pid}`;
    const bg = wrapCommand(
      { user: 'root', workdir: '/tmp', env: { A: 'from env' } },
      `sleep 0.3; echo "$A" > ${out2}`,
      {
        background: true,
      },
    );
    assert.equal(sh(`${bg}\necho started; cat ${out2} 2>/dev/null || true`), 'started\n');
    execFileSync('/bin/sh', ['-c', `while [ ! -s ${out2} ]; do sleep 0.1; done`], { timeout: 10_000 });
    assert.equal(fs.readFileSync(out2, 'utf8'), 'from env\n');
    fs.rmSync(out2);
  });
});

describe('archives', () => {
  async function tarOf(entries: (Partial<tar.Header> & { name: string })[]): Promise<Buffer> {
    const p = tar.pack();
    const out = buffer(p);
    for (const e of entries) {
      if (e.type === 'file') p.entry(e, 'data');
      else p.entry(e);
    }
    p.finalize();
    return out;
  }

  test('a good tar is re-packed with its paths', async () => {
    const a = await checkArchive(
      await tarOf([
        { name: './dir/', type: 'directory' },
        { name: 'dir/f.txt', type: 'file', size: 4 },
        { name: 'dir/l', type: 'symlink', linkname: 'f.txt' },
      ]),
    );
    assert.equal(a.format, 'tar');
    assert.deepEqual([...a.paths].sort(), ['.', 'dir', 'dir/f.txt', 'dir/l']);
  });

  test('traversal, links out and special files are refused', async () => {
    const cases: [(Partial<tar.Header> & { name: string })[], RegExp][] = [
      [[{ name: '../evil', type: 'file', size: 4 }], /relative path inside the archive/],
      [[{ name: '/etc/evil', type: 'file', size: 4 }], /relative path inside the archive/],
      [[{ name: 'l', type: 'symlink', linkname: '/etc/passwd' }], /symlink pointing outside/],
      [[{ name: 'a/l', type: 'symlink', linkname: '../../x' }], /symlink pointing outside/],
      [[{ name: 'h', type: 'link', linkname: '../x' }], /hard link/],
      [
        [
          { name: 'd', type: 'symlink', linkname: '.' },
          { name: 'd/x', type: 'file', size: 4 },
        ],
        /under the symlink/,
      ],
      [[{ name: 'dev', type: 'character-device' }], /only files, directories and links/],
    ];
    for (const [entries, re] of cases) {
      await assert.rejects(checkArchive(await tarOf(entries)), re, JSON.stringify(entries));
    }
    await assert.rejects(checkArchive(Buffer.from('not an archive at all')), /tar, tar.gz or zip/);
  });

  test('zip archives: re-packed as tar; traversal and links out refused', async () => {
    const zipOf = async (files: [string, string, number][]) => {
      const z = new yazl.ZipFile();
      for (const [name, data, mode] of files) z.addBuffer(Buffer.from(data), name, { mode });
      z.end();
      return buffer(z.outputStream);
    };
    const good = await checkArchive(await zipOf([['bin/run.sh', 'echo', 0o100755]]));
    assert.equal(good.format, 'zip');
    assert.deepEqual([...good.paths].sort(), ['.', 'bin', 'bin/run.sh']);
    // yazl will not write "../", so the name is patched into the bytes (local header and central directory).
    const evil = Buffer.from(
      (await zipOf([['xx/evil', 'x', 0o100644]])).toString('latin1').replaceAll('xx/evil', '../evil'),
      'latin1',
    );
    await assert.rejects(checkArchive(evil), /\.\.\/evil/);
    await assert.rejects(checkArchive(await zipOf([['l', '/etc/passwd', 0o120777]])), /symlink pointing outside/);
  });
});
