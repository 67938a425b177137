// Network isolation, end to end: a capsule reaches the outside through NAT,
// but never a service on the host (host agent, control plane, databases) nor
// another capsule; the host reaches every capsule.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import { newCapsuleId, randomToken, removeDataDir, startAgent, type RunningAgent } from './agent-harness.js';
import { assertNoLeaks } from './agent-leaks.js';

const PREFIX = 'htn';

/** A TCP server on every host address that answers "host-secret" to whoever connects. */
function hostServer(): Promise<net.Server> {
  return new Promise((resolve) => {
    const server = net.createServer((s) => s.end('host-secret\n'));
    server.listen(0, '0.0.0.0', () => resolve(server));
  });
}

/** Python in the capsule: OPEN when a TCP connection is made within 2 s, else BLOCKED and the error's kind. */
const probe = (host: string, port: number) => ({
  cmd: 'python3',
  args: [
    '-c',
    `import socket,sys
s=socket.socket(); s.settimeout(2)
try:
    s.connect((${JSON.stringify(host)}, ${port})); print('OPEN')
except Exception as e:
    print('BLOCKED', type(e).__name__)`,
  ],
  timeoutSec: 20,
});

describe('capsule network isolation', () => {
  let agent: RunningAgent;
  let server: net.Server;
  let port: number;
  const a = newCapsuleId();
  const b = newCapsuleId();
  let bIp = '';

  before(async () => {
    agent = await startAgent({ prefix: PREFIX, subnet: '10.233.0.0/24', token: randomToken() });
    server = await hostServer();
    port = (server.address() as net.AddressInfo).port;
    for (const id of [a, b]) {
      const res = await agent.client.createSandbox({
        sandboxId: id,
        template: 'minimal',
        vcpus: 1,
        memoryMb: 256,
        diskSizeMb: 512,
      });
      if (id === b) bIp = res.hostIp;
    }
  });

  after(async () => {
    server?.close();
    if (agent) {
      assert.equal(await agent.terminate(), 0);
      await assertNoLeaks(PREFIX, agent.dataDir, { retired: true });
      removeDataDir(agent.dataDir);
    }
  });

  const run = async (id: string, host: string, p: number) => {
    const res = await agent.client.exec({ sandboxId: id, ...probe(host, p) });
    return Buffer.from(res.stdout).toString().trim();
  };

  test('the host reaches every capsule (envd answers on its address)', async () => {
    const res = await fetch(`http://${bIp}:49983/health`);
    assert.equal(res.status, 204);
  });

  test('a capsule cannot reach a service on any of the host addresses', async () => {
    // The probe itself works: a server inside the capsule is reachable from inside.
    await agent.client.startBackground({
      sandboxId: a,
      cmd: 'python3',
      args: ['-m', 'http.server', '8099'],
      tag: 'web',
    });
    const local = await agent.client.exec({
      sandboxId: a,
      cmd: 'sh',
      args: [
        '-c',
        'for i in $(seq 50); do curl -s -o /dev/null -w "%{http_code}" http://127.0.0.1:8099/ && exit 0; sleep 0.1; done; exit 1',
      ],
    });
    assert.match(Buffer.from(local.stdout).toString(), /200$/, 'the server in the capsule came up');
    assert.equal(await run(a, '127.0.0.1', 8099), 'OPEN', 'the probe sees an open port');

    const gateway = Buffer.from(
      (await agent.client.exec({ sandboxId: a, cmd: 'sh', args: ['-c', "ip route | awk '/default/ {print $3}'"] }))
        .stdout,
    )
      .toString()
      .trim();
    assert.match(gateway, /^10\.233\.0\.\d+$/);
    const hostAddrs = Object.values(os.networkInterfaces())
      .flat()
      .filter((i) => i && i.family === 'IPv4' && !i.internal)
      .map((i) => i!.address);
    for (const addr of new Set([gateway, ...hostAddrs])) {
      assert.match(await run(a, addr, port), /^BLOCKED/, `capsule reached host service at ${addr}:${port}`);
      // The host agent's own RPC port too.
      assert.match(await run(a, addr, agent.port), /^BLOCKED/, `capsule reached the host agent at ${addr}`);
    }
  });

  test('a capsule cannot reach another capsule', async () => {
    assert.match(await run(a, bIp, 49983), /^BLOCKED/);
  });

  test('outbound traffic is masqueraded by the agent', () => {
    const rules = execFileSync('iptables-save', ['-t', 'nat'], { encoding: 'utf8' });
    assert.match(rules, new RegExp(`-A WRENN-${PREFIX.toUpperCase()}-POST .*-j MASQUERADE`));
  });
});
