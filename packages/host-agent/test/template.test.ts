import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Layout } from '../src/layout.js';
import {
  DEFAULT_USER,
  buildMinimalTemplate,
  parseAptMirror,
  readTemplateMeta,
  recipeHash,
  type TemplateMeta,
} from '../src/template/build-minimal.js';
import { run } from '../src/runtime/exec.js';
import { ensureMinimalTemplate } from './helpers/minimal-template.js';

describe('apt mirror discovery', () => {
  test('deb822: first enabled deb stanza serving bookworm', () => {
    const sources = [
      'Types: deb',
      'URIs: http://security.example/debian-security',
      'Suites: bookworm-security',
      'Components: main',
      '',
      'Types: deb',
      'URIs: http://disabled.example/debian',
      'Suites: bookworm',
      'Enabled: no',
      '',
      'Types: deb-src deb',
      '# a comment: with a colon',
      'URIs: http://mirror.example/debian http://second.example/debian',
      'Suites: bookworm bookworm-updates',
      'Components: main',
    ].join('\n');
    assert.equal(parseAptMirror(sources, null), 'http://mirror.example/debian');
  });

  test('falls back to sources.list, skipping comments, deb-src and other suites', () => {
    const list = [
      '# deb http://commented.example/debian bookworm main',
      'deb-src http://src.example/debian bookworm main',
      'deb http://old.example/debian bullseye main',
      'deb [arch=amd64 signed-by=/x.gpg] http://list.example/debian bookworm main contrib',
    ].join('\n');
    assert.equal(parseAptMirror('Types: deb\nURIs: http://x\nSuites: trixie\n', list), 'http://list.example/debian');
  });

  test('no mirror at all is null', () => {
    assert.equal(parseAptMirror(null, null), null);
    assert.equal(parseAptMirror('', '# nothing\n'), null);
  });
});

describe('build cache and failure', () => {
  let root: string;
  let layout: Layout;
  let closedPortMirror: string;

  before(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'wrenn-template-test-'));
    layout = new Layout(root);
    // A port nobody listens on: debootstrap fails fast on it.
    const srv = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    const port = (srv.address() as net.AddressInfo).port;
    await new Promise((r) => srv.close(r));
    closedPortMirror = `http://127.0.0.1:${port}/debian`;
  });
  after(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  async function fakeTemplate(hash: string): Promise<void> {
    const dir = layout.minimalTemplateDir;
    await fs.mkdir(path.join(dir, 'rootfs', 'etc'), { recursive: true });
    await fs.writeFile(path.join(dir, 'rootfs', 'etc', 'marker'), 'old');
    const meta = { name: 'minimal', recipe_hash: hash } as TemplateMeta;
    await fs.writeFile(layout.templateMeta(dir), JSON.stringify(meta));
  }

  test('an up-to-date build is reused without building', async () => {
    await fakeTemplate(recipeHash());
    const t0 = process.hrtime.bigint();
    // The unreachable mirror proves nothing is downloaded.
    const r = await buildMinimalTemplate({ layout, mirror: closedPortMirror });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.equal(r.status, 'reused');
    assert.equal(r.dir, layout.minimalTemplateDir);
    process.stderr.write(`# reuse took ${ms.toFixed(1)} ms\n`);
  });

  test('a changed recipe rebuilds; a failed build leaves the old template and no temp dir', async () => {
    await fs.rm(layout.minimalTemplateDir, { recursive: true, force: true });
    await fakeTemplate('an-older-recipe');
    // A leftover from a builder killed mid-way (its pid cannot exist) is cleaned up too.
    const stale = path.join(layout.imagesDir, '.minimal.tmp-4194305-abcd1234');
    await fs.mkdir(path.join(stale, 'rootfs'), { recursive: true });

    await assert.rejects(buildMinimalTemplate({ layout, mirror: closedPortMirror }), /debootstrap failed/);

    assert.deepEqual(await fs.readdir(layout.imagesDir), ['minimal']);
    assert.equal(await fs.readFile(path.join(layout.minimalTemplateDir, 'rootfs/etc/marker'), 'utf8'), 'old');
    assert.equal((await readTemplateMeta(layout, layout.minimalTemplateDir))?.recipe_hash, 'an-older-recipe');
  });

  test('a failed first build leaves no template directory', async () => {
    await fs.rm(layout.minimalTemplateDir, { recursive: true, force: true });
    await assert.rejects(buildMinimalTemplate({ layout, mirror: closedPortMirror }), /debootstrap failed/);
    assert.deepEqual(await fs.readdir(layout.imagesDir), []);
  });
});

describe('the real minimal template', () => {
  let dir: string;
  let rootfs: string;
  before(async () => {
    dir = await ensureMinimalTemplate();
    rootfs = path.join(dir, 'rootfs');
  });

  test('metadata records the recipe, size and default user', async () => {
    const meta = JSON.parse(await fs.readFile(path.join(dir, 'template.json'), 'utf8')) as TemplateMeta;
    assert.equal(meta.name, 'minimal');
    assert.equal(meta.recipe_hash, recipeHash());
    assert.equal(meta.default_user, DEFAULT_USER);
    assert.ok(meta.debootstrap_args.includes('--variant=minbase'));
    assert.ok(meta.size_bytes > 50 * 2 ** 20, `size ${meta.size_bytes}`);
  });

  test('has the default user, sudo rule, mount point and hostname defaults', async () => {
    const passwd = await fs.readFile(path.join(rootfs, 'etc/passwd'), 'utf8');
    assert.match(passwd, /^user:x:1000:1000:[^:]*:\/home\/user:\/bin\/bash$/m);
    assert.ok((await fs.stat(path.join(rootfs, 'home/user'))).isDirectory());
    const sudoers = await fs.stat(path.join(rootfs, 'etc/sudoers.d/user'));
    assert.equal(sudoers.mode & 0o777, 0o440);
    assert.ok((await fs.stat(path.join(rootfs, 'opt/wrenn'))).isDirectory());
    assert.equal((await fs.readFile(path.join(rootfs, 'etc/hostname'), 'utf8')).trim(), 'capsule');
    assert.equal(await fs.readFile(path.join(rootfs, 'etc/resolv.conf'), 'utf8'), '');
    for (const tool of [
      'usr/bin/bash',
      'usr/bin/curl',
      'usr/bin/python3',
      'usr/bin/sudo',
      'usr/bin/ps',
      'usr/bin/ip',
    ]) {
      await fs.access(path.join(rootfs, tool));
    }
    assert.deepEqual(
      (await fs.readdir(path.join(rootfs, 'var/cache/apt/archives'))).filter((n) => n.endsWith('.deb')),
      [],
    );
  });

  test("the host's node runs on the template's libraries", async () => {
    const out = await run('chroot', [rootfs, '/usr/bin/python3', '-c', 'import ssl; print("ok")']);
    assert.equal(out.trim(), 'ok');
    // Same check the builder makes, done independently: the host node binary linked by the rootfs' ld.so.
    const ldso = path.join(rootfs, 'usr/lib64/ld-linux-x86-64.so.2');
    const libs = ['usr/lib/x86_64-linux-gnu', 'lib/x86_64-linux-gnu'].map((l) => path.join(rootfs, l)).join(':');
    const v = await run(ldso, ['--library-path', libs, process.execPath, '-p', 'process.version']);
    assert.equal(v.trim(), process.version);
  });
});
