// Restart safety through the real host agent: a crash (SIGKILL) or a
// graceful stop (SIGTERM) leaves capsules running; the next agent re-adopts
// them with their records; Terminate destroys everything; nothing leaks.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Code, ConnectError } from '@connectrpc/connect';
import { newCapsuleId, removeDataDir, startAgent, waitUntil, type RunningAgent } from './agent-harness.js';
import { assertNoLeaks } from './agent-leaks.js';
import { text } from './rpc-asserts.js';

const PREFIX = 'htr';
const SUBNET = '10.233.0.0/24';

describe('host agent restarts', () => {
  let agent: RunningAgent | null = null;
  let dataDir = '';

  after(async () => {
    if (agent) assert.equal(await agent.terminate(), 0);
    if (dataDir) {
      await assertNoLeaks(PREFIX, dataDir, { retired: true });
      removeDataDir(dataDir);
    }
  });

  test('SIGKILL, restart: capsules re-adopted with state, records and processes; then destroyed cleanly', async () => {
    agent = await startAgent({ prefix: PREFIX, subnet: SUBNET });
    dataDir = agent.dataDir;
    const running = newCapsuleId();
    const paused = newCapsuleId();
    let c = agent.client;
    await c.createSandbox({ sandboxId: running, template: 'minimal', timeoutSec: 600, memoryMb: 256 });
    await c.createSandbox({ sandboxId: paused, template: 'minimal', vcpus: 1 });
    await c.startBackground({
      sandboxId: running,
      cmd: '/bin/sh',
      args: ['-c', 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done'],
      tag: 'counter',
    });
    await c.writeFile({ sandboxId: paused, path: '/root/note.txt', content: Buffer.from('kept') });
    await c.pauseSandbox({ sandboxId: paused });

    assert.equal(await agent.kill(), null, 'killed by a signal');
    agent = await startAgent({ prefix: PREFIX, subnet: SUBNET, dataDir });
    c = agent.client;

    const list = await c.listSandboxes({});
    const byId = new Map(list.sandboxes.map((s) => [s.sandboxId, s]));
    assert.equal(byId.size, 2);
    assert.equal(byId.get(running)?.status, 'running');
    assert.equal(byId.get(running)?.timeoutSec, 600, 'timeout read back from the agent record');
    assert.equal(byId.get(running)?.template, 'minimal');
    assert.equal(byId.get(running)?.memoryMb, 256);
    assert.equal(byId.get(paused)?.status, 'paused');

    // The running capsule's process survived the agent crash.
    const procs = await c.listProcesses({ sandboxId: running });
    assert.ok(procs.processes.some((p) => p.tag === 'counter'));
    const n1 = Number(text((await c.readFile({ sandboxId: running, path: '/tmp/counter' })).content));
    await waitUntil(
      async () => Number(text((await c.readFile({ sandboxId: running, path: '/tmp/counter' })).content)) > n1,
      5000,
      'counter still advancing',
    );

    // The paused one resumes with its files.
    await c.resumeSandbox({ sandboxId: paused, timeoutSec: 0 });
    assert.equal(text((await c.readFile({ sandboxId: paused, path: '/root/note.txt' })).content), 'kept');

    // Metrics are sampled again for re-adopted capsules.
    await waitUntil(
      async () => (await c.getSandboxMetrics({ sandboxId: running, range: '5m' })).points.length > 0,
      10_000,
      'metrics for the re-adopted capsule',
    );

    await c.destroySandbox({ sandboxId: running });
    await c.destroySandbox({ sandboxId: paused });
    assert.equal((await c.listSandboxes({})).sandboxes.length, 0);
    await assertNoLeaks(PREFIX, dataDir);
    assert.deepEqual(fs.readdirSync(agent.layout.capsuleMetaDir), [], 'no agent records left');
  });

  test('SIGTERM leaves capsules running; Terminate destroys them all and exits', async () => {
    assert.ok(agent);
    const a = newCapsuleId();
    const b = newCapsuleId();
    await agent.client.createSandbox({ sandboxId: a, template: 'minimal' });
    await agent.client.createSandbox({ sandboxId: b, template: 'minimal' });
    assert.equal(await agent.stop(), 0, 'graceful exit');
    assert.match(agent.output(), /capsules keep running/);

    agent = await startAgent({ prefix: PREFIX, subnet: SUBNET, dataDir });
    const c = agent.client;
    const ids = (await c.listSandboxes({})).sandboxes.map((s) => s.sandboxId).sort();
    assert.deepEqual(ids, [a, b].sort());
    const r = await c.exec({ sandboxId: a, cmd: 'echo', args: ['back'] });
    assert.equal(text(r.stdout), 'back\n');

    assert.equal(await agent.terminate(), 0, 'Terminate exits cleanly');
    agent = null;
    await assertNoLeaks(PREFIX, dataDir, { retired: true });

    // A fresh agent finds nothing to adopt.
    agent = await startAgent({ prefix: PREFIX, subnet: SUBNET, dataDir });
    assert.equal((await agent.client.listSandboxes({})).sandboxes.length, 0);
    try {
      await agent.client.pingSandbox({ sandboxId: a });
      assert.fail('ping of a destroyed capsule succeeded');
    } catch (err) {
      assert.ok(err instanceof ConnectError && err.code === Code.NotFound);
    }
  });
});
