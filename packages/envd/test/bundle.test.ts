// The shipped artifact: the single-file bundle, laid out as in a capsule's
// /opt/wrenn (envd.mjs next to node_modules/node-pty, nothing else), started
// with a bare environment.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { clients, collect, startEnvd, tempDir, type Envd } from './helpers.js';

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe('envd bundle', () => {
  let dir: string;
  let envd: Envd;

  before(async () => {
    dir = tempDir('wrenn-envd-bundle-');
    execFileSync(process.execPath, [path.join(pkgDir, 'scripts/bundle.mjs'), path.join(dir, 'envd.mjs')]);
    const ptyDir = path.dirname(createRequire(path.join(pkgDir, 'package.json')).resolve('node-pty/package.json'));
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(ptyDir, path.join(dir, 'node_modules/node-pty'));
    envd = await startEnvd([], path.join(dir, 'envd.mjs'), { PATH: process.env.PATH });
  });

  after(async () => {
    await envd?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('is one file that needs only node-pty beside it', () => {
    const text = fs.readFileSync(path.join(dir, 'envd.mjs'), 'utf8');
    const imports = [...text.matchAll(/(?:from\s*|import\s*\(?\s*|require\()\s*["']([^"']+)["']/g)].map((m) => m[1]);
    const foreign = imports.filter((s) => s && !s.startsWith('node:') && s !== 'node-pty');
    assert.deepEqual([...new Set(foreign)], []);
  });

  it('serves health, RPCs (pipes and a PTY) and files', async () => {
    const health = await new Promise<number>((resolve, reject) =>
      http.get(`${envd.baseUrl}/health`, (res) => resolve(res.statusCode ?? 0)).on('error', reject),
    );
    assert.equal(health, 204);
    const c = clients(envd.baseUrl);
    const r = await collect(c.process.start({ process: { cmd: 'echo', args: ['from the bundle'] } }));
    assert.equal(r.stdout.toString(), 'from the bundle\n');

    let pty = '';
    let ended = false;
    const stream = c.process.start({
      process: { cmd: 'sh', args: ['-c', 'stty size'] },
      pty: { size: { cols: 91, rows: 17 } },
    });
    for await (const m of stream) {
      const ev = m.event?.event;
      if (ev?.case === 'data' && ev.value.output.case === 'pty') pty += Buffer.from(ev.value.output.value).toString();
      if (ev?.case === 'end') ended = true;
    }
    assert.ok(ended);
    assert.match(pty, /17 91/);

    const { entries } = await c.fs.listDir({ path: dir });
    assert.ok(entries.some((e) => e.name === 'envd.mjs'));
    const size = await new Promise<number>((resolve, reject) =>
      http
        .get(`${envd.baseUrl}/files?path=${encodeURIComponent(path.join(dir, 'envd.mjs'))}`, (res) => {
          let n = 0;
          res.on('data', (d: Buffer) => (n += d.length));
          res.on('end', () => resolve(n));
        })
        .on('error', reject),
    );
    assert.equal(size, fs.statSync(path.join(dir, 'envd.mjs')).size);
  });
});
