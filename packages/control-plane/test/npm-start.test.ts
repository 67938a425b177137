// `npm start` end to end (scripts/start.mjs, after setup): the whole platform on
// the embedded database, a registered host agent, the printed API key and
// .wrenn/dev.env; a capsule runs; Ctrl-C stops everything and leaves nothing
// behind; a second start reuses the admin, the key and the host.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT, freePort, waitFor } from '@wrenn/testkit';

const PREFIX = 'nst';
const START = path.join(REPO_ROOT, 'scripts', 'start.mjs');
const MINIMAL = path.join(process.env.WRENN_DIR || path.join(REPO_ROOT, '.wrenn', 'data'), 'images', 'minimal');

interface Run {
  proc: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

function leftovers(): string[] {
  const found: string[] = [];
  const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  for (const line of netns.split('\n')) if (line.startsWith(`${PREFIX}-`)) found.push(`netns ${line}`);
  const rules = execFileSync('iptables', ['-S'], { encoding: 'utf8' });
  if (rules.includes(`WRENN-${PREFIX.toUpperCase()}`)) found.push('iptables chains');
  for (const h of fs.readdirSync('/sys/fs/cgroup')) {
    if (fs.existsSync(path.join('/sys/fs/cgroup', h, `wrenn-${PREFIX}`))) found.push(`cgroup ${h}/wrenn-${PREFIX}`);
  }
  return found;
}

describe('npm start', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let baseUrl: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wrenn-npm-start-'));
    fs.mkdirSync(path.join(dir, 'data', 'images'), { recursive: true });
    fs.symlinkSync(MINIMAL, path.join(dir, 'data', 'images', 'minimal'));
    const port = await freePort();
    baseUrl = `http://localhost:${port}`;
    env = {
      ...process.env,
      WRENN_DIR: path.join(dir, 'data'),
      WRENN_DEV_ENV: path.join(dir, 'dev.env'),
      WRENN_PORT: String(port),
      WRENN_CP_LISTEN_ADDR: `127.0.0.1:${port}`,
      WRENN_HOST_LISTEN_ADDR: `127.0.0.1:${await freePort()}`,
      WRENN_NET_PREFIX: PREFIX,
      WRENN_SUBNET: '10.252.0.0/24',
    };
    delete env.DATABASE_URL; // the embedded database, as on a fresh machine
    delete env.REDIS_URL;
  });

  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function start(): Promise<Run & { apiKey: string }> {
    const proc = spawn(process.execPath, [START], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
    await waitFor(
      'npm start to print "Wrenn is running."',
      async () => {
        if (proc.exitCode !== null) throw new Error(`start exited:\n${out}`);
        return out.includes('Ctrl-C stops everything.');
      },
      120_000,
    );
    const apiKey = /API key:\s+(wrn_[0-9a-f]{32})/.exec(out)?.[1];
    assert.ok(apiKey, out);
    return { proc, out: () => out, exited, apiKey };
  }

  async function stop(run: Run): Promise<void> {
    run.proc.kill('SIGINT');
    assert.equal(await run.exited, 0, run.out());
  }

  const api = async (apiKey: string, method: string, url: string, body?: unknown) => {
    const res = await fetch(baseUrl + url, {
      method,
      headers: { 'x-api-key': apiKey, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };

  it('runs the platform, prints a working key, and Ctrl-C leaves nothing running', async () => {
    const run = await start();
    assert.match(run.out(), new RegExp(`API:\\s+${baseUrl}`));
    assert.match(run.out(), /Dashboard:/);

    const devEnv = fs.readFileSync(path.join(dir, 'dev.env'), 'utf8');
    assert.equal(fs.statSync(path.join(dir, 'dev.env')).mode & 0o777, 0o600);
    for (const k of ['WRENN_BASE_URL', 'WRENN_API_KEY', 'WRENN_ADMIN_EMAIL', 'WRENN_ADMIN_PASSWORD']) {
      assert.match(devEnv, new RegExp(`^${k}=.+$`, 'm'), k);
    }
    assert.match(devEnv, new RegExp(`^WRENN_API_KEY=${run.apiKey}$`, 'm'));

    const created = await api(run.apiKey, 'POST', '/v1/capsules', {});
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const exec = await api(run.apiKey, 'POST', `/v1/capsules/${created.body.id}/exec`, { cmd: 'echo', args: ['hi'] });
    assert.equal(exec.body.stdout, 'hi\n');
    assert.notDeepEqual(leftovers(), [], 'a running capsule has host objects');

    await stop(run);
    assert.deepEqual(leftovers(), [], 'Ctrl-C must leave nothing behind');
    const ps = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
    assert.equal(ps.includes(path.join(dir, 'data')), false, 'no process of this platform is left');

    // A second start: same admin and key, same host, and the capsule Ctrl-C destroyed is reported stopped.
    const again = await start();
    assert.equal(again.apiKey, run.apiKey);
    assert.equal(/registering again/.test(again.out()), false);
    await waitFor('the destroyed capsule to be stopped', async () => {
      const r = await api(again.apiKey, 'GET', `/v1/capsules/${created.body.id}`);
      return r.body.status === 'stopped';
    });
    await stop(again);
    assert.deepEqual(leftovers(), []);
  });
});
