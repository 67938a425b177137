// Host agent configuration: defaults, accepted forms, and one clear error per bad value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ConfigError, loadConfig, parseListenAddr } from '../src/config.js';
import { MAIN_JS, makeDataDir, removeDataDir } from './agent-harness.js';
import { REPO_ROOT } from '../src/layout.js';

test('defaults', () => {
  const c = loadConfig({});
  assert.deepEqual(c, {
    dataDir: path.join(REPO_ROOT, '.wrenn', 'data'),
    listenHost: '0.0.0.0',
    listenPort: 50051,
    netPrefix: 'wr',
    subnet: '10.20.0.0/16',
    agentToken: null,
    logLevel: 'info',
    cpUrl: null,
    heartbeatIntervalMs: 30_000,
    destroyOnExit: false,
  });
});

test('explicit values', () => {
  const c = loadConfig({
    WRENN_DIR: '/var/lib/wrenn',
    WRENN_HOST_LISTEN_ADDR: '127.0.0.1:0',
    WRENN_NET_PREFIX: 'ab12',
    WRENN_SUBNET: '10.99.0.0/20',
    WRENN_AGENT_TOKEN: 'x'.repeat(32),
    LOG_LEVEL: 'DEBUG',
    WRENN_CP_URL: 'https://cp.example.com/',
    WRENN_HEARTBEAT_INTERVAL_SEC: '2.5',
  });
  assert.equal(c.cpUrl, 'https://cp.example.com');
  assert.equal(c.heartbeatIntervalMs, 2500);
  assert.equal(c.dataDir, '/var/lib/wrenn');
  assert.equal(c.listenHost, '127.0.0.1');
  assert.equal(c.listenPort, 0);
  assert.equal(c.netPrefix, 'ab12');
  assert.equal(c.subnet, '10.99.0.0/20');
  assert.equal(c.agentToken, 'x'.repeat(32));
  assert.equal(c.logLevel, 'debug');
});

test('listen address forms', () => {
  assert.deepEqual(parseListenAddr(':50051'), { host: '0.0.0.0', port: 50051 });
  assert.deepEqual(parseListenAddr('[::1]:8080'), { host: '::1', port: 8080 });
  assert.deepEqual(parseListenAddr('localhost:1'), { host: 'localhost', port: 1 });
});

test('bad values: one clear error naming the variable', () => {
  const bad: [Record<string, string>, RegExp][] = [
    [{ WRENN_HOST_LISTEN_ADDR: '50051' }, /WRENN_HOST_LISTEN_ADDR must be host:port/],
    [{ WRENN_HOST_LISTEN_ADDR: '0.0.0.0:70000' }, /port must be 0\.\.65535/],
    [{ WRENN_HOST_LISTEN_ADDR: 'a b:1' }, /invalid host/],
    [{ WRENN_NET_PREFIX: 'toolong' }, /WRENN_NET_PREFIX must be 1-4/],
    [{ WRENN_NET_PREFIX: '1ab' }, /WRENN_NET_PREFIX/],
    [{ WRENN_NET_PREFIX: 'a-b' }, /WRENN_NET_PREFIX/],
    [{ WRENN_SUBNET: '10.20.0.0' }, /WRENN_SUBNET must be an IPv4 CIDR/],
    [{ WRENN_SUBNET: '300.1.1.0/24' }, /WRENN_SUBNET must be an IPv4 CIDR/],
    [{ WRENN_SUBNET: '10.20.0.1/16' }, /host bits set/],
    [{ WRENN_SUBNET: '10.0.0.0/30' }, /prefix length must be 8\.\.28/],
    [{ WRENN_AGENT_TOKEN: 'short' }, /WRENN_AGENT_TOKEN must be at least 16/],
    [{ WRENN_AGENT_TOKEN: 'has a space in the token' }, /WRENN_AGENT_TOKEN/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL must be one of/],
    [{ WRENN_CP_URL: 'ftp://cp' }, /WRENN_CP_URL must be an http\(s\) URL/],
    [{ WRENN_CP_URL: 'not a url' }, /WRENN_CP_URL/],
    [{ WRENN_HEARTBEAT_INTERVAL_SEC: '0' }, /WRENN_HEARTBEAT_INTERVAL_SEC/],
    [{ WRENN_HEARTBEAT_INTERVAL_SEC: 'soon' }, /WRENN_HEARTBEAT_INTERVAL_SEC/],
    [{ WRENN_DESTROY_ON_EXIT: 'maybe' }, /WRENN_DESTROY_ON_EXIT must be true or false/],
  ];
  for (const [env, re] of bad) {
    assert.throws(
      () => loadConfig(env),
      (err: unknown) => err instanceof ConfigError && re.test(err.message) && !err.message.includes('\n'),
      JSON.stringify(env),
    );
  }
});

test('empty WRENN_AGENT_TOKEN means no token', () => {
  assert.equal(loadConfig({ WRENN_AGENT_TOKEN: '' }).agentToken, null);
});

test('the agent refuses bad configuration with one line on stderr and exit code 1', () => {
  const bad: [string, string][] = [
    ['WRENN_NET_PREFIX', 'BAD!'],
    ['WRENN_SUBNET', 'nope'],
    ['LOG_LEVEL', 'chatty'],
  ];
  for (const [key, value] of bad) {
    const r = spawnSync(process.execPath, [MAIN_JS], {
      env: { ...process.env, [key]: value },
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(r.status, 1, `${key}=${value}`);
    assert.equal(r.stdout, '');
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, new RegExp(`^wrenn host agent: ${key}`));
  }
});

test('bad command lines: one line on stderr and exit code 1, before touching anything', () => {
  const bad: [string[], Record<string, string>, RegExp][] = [
    [['--register'], {}, /--register/],
    [['--register', 'tok'], { WRENN_CP_URL: 'http://127.0.0.1:1' }, /--register needs --address/],
    [['--register', 'tok', '--address', '127.0.0.1:5'], { WRENN_CP_URL: '' }, /needs WRENN_CP_URL/],
    [['--register', 'tok', '--address', '127.0.0.1:0'], { WRENN_CP_URL: 'http://127.0.0.1:1' }, /--address/],
    [['--bogus'], {}, /Unknown option '--bogus'/],
  ];
  for (const [args, env, re] of bad) {
    const r = spawnSync(process.execPath, [MAIN_JS, ...args], {
      env: { ...process.env, WRENN_DIR: '/nonexistent-wrenn-dir', ...env },
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(r.status, 1, args.join(' '));
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, re);
    assert.match(lines[0]!, /^wrenn host agent: /);
  }
});

test('registration against an unreachable control plane fails with one line and leaves nothing', (t) => {
  const dataDir = makeDataDir();
  t.after(() => removeDataDir(dataDir));
  const r = spawnSync(process.execPath, [MAIN_JS, '--register', 'tok', '--address', '127.0.0.1:5'], {
    env: {
      ...process.env,
      WRENN_DIR: dataDir,
      WRENN_CP_URL: 'http://127.0.0.1:1',
      WRENN_HOST_LISTEN_ADDR: '127.0.0.1:0',
      WRENN_NET_PREFIX: 'hcf',
      WRENN_SUBNET: '10.245.0.0/24',
      LOG_LEVEL: 'silent',
    },
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr.trim(), /^wrenn host agent: cannot reach the control plane at http:\/\/127\.0\.0\.1:1/);
  assert.equal(
    spawnSync('iptables', ['-S'], { encoding: 'utf8' }).stdout.includes('HCF'),
    false,
    'firewall chains left',
  );
  assert.equal(fs.existsSync(path.join(dataDir, 'host-credentials.json')), false);
});
