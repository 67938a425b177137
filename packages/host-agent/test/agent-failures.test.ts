// Failure paths through the real host agent: each gives a clear error and
// leaves the host and the other capsules unharmed, and nothing leaks.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Code, ConnectError } from '@connectrpc/connect';
import { newUuid, uuidToBase36 } from '@wrenn/contracts';
import {
  newCapsuleId,
  removeDataDir,
  startAgent,
  waitUntil,
  type AgentClient,
  type RunningAgent,
} from './agent-harness.js';
import { assertNoLeaks, findLeaks } from './agent-leaks.js';
import { rejects, sh, text } from './rpc-asserts.js';

const PREFIX = 'htf';

describe('host agent failure paths', () => {
  let agent: RunningAgent;
  let c: AgentClient;
  const bystander = newCapsuleId();

  const createCapsule = async (over: { memoryMb?: number; diskSizeMb?: number } = {}) => {
    const id = newCapsuleId();
    await c.createSandbox({ sandboxId: id, template: 'minimal', ...over });
    return id;
  };
  const bystanderFine = async () => {
    const r = await c.exec({ sandboxId: bystander, cmd: 'echo', args: ['fine'] });
    assert.equal(text(r.stdout), 'fine\n', 'the other capsule still works');
    assert.equal(spawnSync('true').status, 0, 'the host can still start processes');
  };

  before(async () => {
    agent = await startAgent({ prefix: PREFIX, subnet: '10.232.0.0/24' });
    c = agent.client;
    await c.createSandbox({ sandboxId: bystander, template: 'minimal' });
  });

  after(async () => {
    if (!agent) return;
    assert.equal(await agent.terminate(), 0);
    await assertNoLeaks(PREFIX, agent.dataDir, { retired: true });
    removeDataDir(agent.dataDir);
  });

  test('a full process table gives a clear error from exec; freeing it recovers', async () => {
    const id = await createCapsule({ memoryMb: 1024 });
    // Forks sleepers until the pids limit refuses one, then keeps grabbing any slot that frees up.
    const filler = [
      'import os, time',
      'while True:',
      '    try:',
      '        pid = os.fork()',
      '    except OSError:',
      '        time.sleep(0.005)',
      '        continue',
      '    if pid == 0:',
      '        os.execv("/bin/sleep", ["sleep", "100000"])',
    ].join('\n');
    await c.startBackground({ sandboxId: id, cmd: 'python3', args: ['-c', filler], tag: 'filler' });
    let err: unknown = null;
    await waitUntil(
      async () => {
        try {
          await c.exec({ sandboxId: id, cmd: 'true', timeoutSec: 10 });
          return false;
        } catch (e) {
          err = e;
          return true;
        }
      },
      120_000,
      'exec to fail once the pids limit is reached',
    );
    assert.ok(err instanceof ConnectError, String(err));
    assert.equal(Code[err.code], Code[Code.ResourceExhausted], err.message);
    assert.match(err.rawMessage, /cannot start more processes \(process limit reached\)/);
    await bystanderFine();
    await c.killProcess({ sandboxId: id, selector: { case: 'tag', value: 'filler' } });
    await waitUntil(
      async () => (await c.exec({ sandboxId: id, cmd: 'true' }).catch(() => null))?.exitCode === 0,
      20_000,
      'exec to work again after the filler is killed',
    );
    await c.destroySandbox({ sandboxId: id });
  });

  test('a fork bomb is contained; the capsule can be destroyed', async () => {
    const id = await createCapsule();
    await c.startBackground({ sandboxId: id, cmd: '/bin/bash', args: ['-c', 'f(){ f | f & }; f'], tag: 'bomb' });
    await new Promise((r) => setTimeout(r, 3000));
    await bystanderFine();
    await c.destroySandbox({ sandboxId: id });
    await bystanderFine();
  });

  test('a memory hog is killed by its own limit; the capsule lives on', async () => {
    const id = await createCapsule({ memoryMb: 128 });
    const r = await c.exec({
      sandboxId: id,
      cmd: 'python3',
      args: ['-c', 'b = bytearray(512 * 1024 * 1024); print("survived")'],
      timeoutSec: 60,
    });
    assert.notEqual(r.exitCode, 0, 'the hog did not complete');
    assert.doesNotMatch(text(r.stdout), /survived/);
    const ok = await c.exec({ sandboxId: id, cmd: 'echo', args: ['still here'] });
    assert.equal(text(ok.stdout), 'still here\n');
    await bystanderFine();
    await c.destroySandbox({ sandboxId: id });
  });

  test('a full disk is ENOSPC inside the capsule only', async () => {
    const id = await createCapsule({ diskSizeMb: 256 });
    const before = fs.statfsSync(agent.dataDir);
    const dd = await c.exec({
      sandboxId: id,
      ...sh('dd if=/dev/zero of=/tmp/fill bs=1M count=400'),
      timeoutSec: 120,
    });
    assert.notEqual(dd.exitCode, 0);
    assert.match(text(dd.stderr), /No space left on device/);
    await rejects(
      c.writeFile({ sandboxId: id, path: '/tmp/more.bin', content: Buffer.alloc(4 * 1024 * 1024, 1) }),
      Code.ResourceExhausted,
    );
    const afterFill = fs.statfsSync(agent.dataDir);
    const usedMb = ((before.bavail - afterFill.bavail) * before.bsize) / 1024 / 1024;
    assert.ok(usedMb < 300, `host disk use grew by at most the capsule's 256 MiB (grew ${usedMb.toFixed(0)} MiB)`);
    await c.removePath({ sandboxId: id, path: '/tmp/fill' });
    await c.writeFile({ sandboxId: id, path: '/tmp/more.bin', content: Buffer.alloc(4 * 1024 * 1024, 1) });
    await bystanderFine();
    await c.destroySandbox({ sandboxId: id });
  });

  test('a capsule whose envd died answers Unavailable and can still be destroyed', async () => {
    const id = await createCapsule();
    await c.startBackground({ sandboxId: id, ...sh('sleep 0.3; pkill -9 -f /opt/wrenn/envd.mjs') });
    await waitUntil(
      async () => {
        try {
          await c.exec({ sandboxId: id, cmd: 'true', timeoutSec: 5 });
          return false;
        } catch (err) {
          assert.ok(err instanceof ConnectError);
          assert.equal(Code[err.code], Code[Code.Unavailable], err.message);
          assert.match(err.rawMessage, /not responding/);
          return true;
        }
      },
      10_000,
      'exec to fail once envd is dead',
    );
    await rejects(c.readFile({ sandboxId: id, path: '/etc/hostname' }), Code.Unavailable, /not responding/);
    await bystanderFine();
    await c.destroySandbox({ sandboxId: id });
  });

  test('a create that fails halfway (broken template) leaves nothing behind', async () => {
    const team = newUuid();
    const tpl = newUuid();
    const dir = path.join(agent.layout.imagesDir, 'teams', uuidToBase36(team), uuidToBase36(tpl));
    fs.mkdirSync(path.join(dir, 'rootfs'), { recursive: true }); // empty: envd cannot run in it
    const id = newCapsuleId();
    const t0 = Date.now();
    await rejects(
      c.createSandbox({ sandboxId: id, template: 'broken', teamId: team, templateId: tpl }),
      Code.Unavailable,
      /did not become ready/,
    );
    assert.ok(Date.now() - t0 < 20_000, 'fails fast, not at the 30 s deadline');
    const list = await c.listSandboxes({});
    assert.ok(!list.sandboxes.some((s) => s.sandboxId === id));
    assert.equal(fs.existsSync(agent.layout.sandboxDir(id)), false);
    assert.equal(fs.existsSync(agent.layout.capsuleMetaFile(id)), false);
    fs.rmSync(path.join(agent.layout.imagesDir, 'teams'), { recursive: true, force: true });
    // The same id can be used afterwards.
    await c.createSandbox({ sandboxId: id, template: 'minimal' });
    await c.destroySandbox({ sandboxId: id });
  });

  test('a host out of network slots refuses more capsules with ResourceExhausted, leaving nothing', async () => {
    // A second agent whose subnet (/28) holds only a few capsules.
    const small = await startAgent({ prefix: 'htg', subnet: '10.235.0.0/28' });
    try {
      const made: string[] = [];
      let refusal: unknown = null;
      for (let i = 0; i < 10 && !refusal; i++) {
        const id = newCapsuleId();
        try {
          await small.client.createSandbox({ sandboxId: id, template: 'minimal' });
          made.push(id);
        } catch (err) {
          refusal = err;
        }
      }
      assert.ok(made.length >= 1, 'some capsules fit');
      assert.ok(refusal instanceof ConnectError, `a create was refused (${made.length} made)`);
      assert.equal(Code[refusal.code], Code[Code.ResourceExhausted], refusal.message);
      assert.match(refusal.rawMessage, /cannot take more capsules/);
      assert.equal((await small.client.listSandboxes({})).sandboxes.length, made.length);
      // Freeing one slot makes room again.
      await small.client.destroySandbox({ sandboxId: made.pop()! });
      const again = newCapsuleId();
      await small.client.createSandbox({ sandboxId: again, template: 'minimal' });
      made.push(again);
    } finally {
      assert.equal(await small.terminate(), 0);
      await assertNoLeaks('htg', small.dataDir, { retired: true });
      removeDataDir(small.dataDir);
    }
  });

  test('destroyed capsules leave nothing behind', async () => {
    const list = await c.listSandboxes({});
    assert.deepEqual(
      list.sandboxes.map((s) => s.sandboxId),
      [bystander],
    );
    // The check can fail: it sees every kind of resource of a live capsule.
    const live = await findLeaks(PREFIX, agent.dataDir);
    for (const kind of ['netns', 'link', 'mount', 'loop', 'cgroup', 'runc container', 'sandbox dir', 'process']) {
      assert.ok(
        live.some((l) => l.startsWith(`${kind} `)),
        `the leak check sees the live capsule's ${kind}`,
      );
    }
    await c.destroySandbox({ sandboxId: bystander });
    await assertNoLeaks(PREFIX, agent.dataDir);
  });
});
