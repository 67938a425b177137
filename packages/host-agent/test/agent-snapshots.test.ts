// CreateSnapshot / DeleteSnapshot through the real host agent: a capsule's
// file system becomes a team template that new capsules start from; names and
// ids are checked at the edge; deleting a template some capsule still uses
// waits for that capsule; a restart sweeps leftovers; nothing leaks.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Code } from '@connectrpc/connect';
import { PLATFORM_UUID, newUuid } from '@wrenn/contracts';
import { newCapsuleId, removeDataDir, startAgent, type AgentClient, type RunningAgent } from './agent-harness.js';
import { assertNoLeaks } from './agent-leaks.js';
import { rejects, sh, text } from './rpc-asserts.js';

const PREFIX = 'hts';
const SUBNET = '10.251.0.0/24';

describe('host agent snapshots', () => {
  let agent: RunningAgent;
  let c: AgentClient;
  const team = newUuid();

  /** Everything under the team's template directory (hidden siblings included). */
  const teamEntries = () => {
    const dir = path.dirname(agent.layout.templateDir(team, newUuid()));
    return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
  };
  const run = async (id: string, script: string) => text((await c.exec({ sandboxId: id, ...sh(script) })).stdout);
  const status = async (id: string) => (await c.listSandboxes({})).sandboxes.find((s) => s.sandboxId === id)?.status;

  before(async () => {
    agent = await startAgent({ prefix: PREFIX, subnet: SUBNET });
    c = agent.client;
  });

  after(async () => {
    if (!agent) return;
    assert.equal(await agent.terminate(), 0);
    await assertNoLeaks(PREFIX, agent.dataDir, { retired: true });
    removeDataDir(agent.dataDir);
  });

  test('snapshot of a running capsule: files (and removals) carried over, capsule keeps running', async () => {
    const src = newCapsuleId();
    await c.createSandbox({ sandboxId: src, template: 'minimal' });
    await c.writeFile({ sandboxId: src, path: '/home/user/note.txt', content: Buffer.from('from the source') });
    await run(src, 'mkdir -p /srv/data && head -c 1048576 /dev/urandom > /srv/data/blob && rm /etc/issue');
    const blobSum = await run(src, 'sha256sum /srv/data/blob');
    await c.startBackground({ sandboxId: src, ...sh('sleep 1000'), tag: 'sleeper' });

    const templateId = newUuid();
    const res = await c.createSnapshot({ sandboxId: src, name: 'snap-a', teamId: team, templateId });
    assert.equal(res.name, 'snap-a');
    assert.ok(res.sizeBytes > 1024n * 1024n, `size ${res.sizeBytes} counts the files`);

    const dir = agent.layout.templateDir(team, templateId);
    assert.ok(fs.statSync(path.join(dir, 'rootfs')).isDirectory());
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'template.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(meta.name, 'snap-a');
    assert.equal(meta.type, 'snapshot');
    assert.equal(meta.source_capsule, src);
    assert.deepEqual(
      teamEntries().filter((n) => n.startsWith('.')),
      [],
      'no temporary directory left',
    );

    // The source was resumed: still running, its process alive, its files writable.
    assert.equal(await status(src), 'running');
    assert.ok((await c.listProcesses({ sandboxId: src })).processes.some((p) => p.tag === 'sleeper'));
    await c.writeFile({ sandboxId: src, path: '/home/user/after.txt', content: Buffer.from('later') });

    const copy = newCapsuleId();
    await c.createSandbox({ sandboxId: copy, template: 'snap-a', teamId: team, templateId });
    assert.equal(text((await c.readFile({ sandboxId: copy, path: '/home/user/note.txt' })).content), 'from the source');
    assert.equal(await run(copy, 'sha256sum /srv/data/blob'), blobSum);
    assert.equal(await run(copy, 'test -e /etc/issue && echo present || echo absent'), 'absent\n');
    assert.equal(await run(copy, 'test -e /home/user/after.txt && echo present || echo absent'), 'absent\n');
    // Writes in the copy stay in the copy.
    await run(copy, 'echo changed > /home/user/note.txt');
    assert.equal(text((await c.readFile({ sandboxId: src, path: '/home/user/note.txt' })).content), 'from the source');

    // Same template id again: refused, the existing template untouched.
    await rejects(c.createSnapshot({ sandboxId: src, name: 'snap-a', teamId: team, templateId }), Code.AlreadyExists);
    assert.ok(fs.existsSync(path.join(dir, 'rootfs', 'srv', 'data', 'blob')));

    await c.destroySandbox({ sandboxId: copy });
    await c.destroySandbox({ sandboxId: src });
    await c.deleteSnapshot({ name: 'snap-a', teamId: team, templateId });
    assert.ok(!fs.existsSync(dir), 'template directory removed');
    await rejects(
      c.createSandbox({ sandboxId: newCapsuleId(), template: 'snap-a', teamId: team, templateId }),
      Code.NotFound,
    );
    await rejects(c.deleteSnapshot({ name: 'snap-a', teamId: team, templateId }), Code.NotFound);
  });

  test('snapshot of a paused capsule leaves it paused; it resumes afterwards', async () => {
    const src = newCapsuleId();
    await c.createSandbox({ sandboxId: src, template: 'minimal' });
    await c.writeFile({ sandboxId: src, path: '/root/state.txt', content: Buffer.from('paused state') });
    await c.pauseSandbox({ sandboxId: src });
    const templateId = newUuid();
    await c.createSnapshot({ sandboxId: src, name: 'snap-paused', teamId: team, templateId });
    assert.equal(await status(src), 'paused');
    await c.resumeSandbox({ sandboxId: src });
    assert.equal(await run(src, 'cat /root/state.txt'), 'paused state');

    const copy = newCapsuleId();
    await c.createSandbox({ sandboxId: copy, template: 'snap-paused', teamId: team, templateId });
    assert.equal(await run(copy, 'cat /root/state.txt'), 'paused state');
    await c.destroySandbox({ sandboxId: copy });
    await c.destroySandbox({ sandboxId: src });
    await c.deleteSnapshot({ teamId: team, templateId, name: '' });
  });

  test('names and ids are checked before anything is touched', async () => {
    const src = newCapsuleId();
    await c.createSandbox({ sandboxId: src, template: 'minimal' });
    const before = teamEntries();
    const templateId = newUuid();
    for (const name of ['', '..', '../x', 'a/b', '/etc', 'x'.repeat(65), 'a..b']) {
      await rejects(c.createSnapshot({ sandboxId: src, name, teamId: team, templateId }), Code.InvalidArgument);
    }
    for (const bad of ['../../etc', 'not-a-uuid', '00000000-0000-0000-0000-00000000000g']) {
      await rejects(
        c.createSnapshot({ sandboxId: src, name: 'ok', teamId: team, templateId: bad }),
        Code.InvalidArgument,
      );
      await rejects(c.createSnapshot({ sandboxId: src, name: 'ok', teamId: bad, templateId }), Code.InvalidArgument);
      await rejects(c.deleteSnapshot({ teamId: team, templateId: bad }), Code.InvalidArgument);
      await rejects(c.deleteSnapshot({ teamId: bad, templateId }), Code.InvalidArgument);
    }
    // The built-in template (all-zero ids) can be neither written nor deleted.
    for (const templateIdZero of ['', PLATFORM_UUID]) {
      await rejects(
        c.createSnapshot({ sandboxId: src, name: 'minimal', teamId: '', templateId: templateIdZero }),
        Code.InvalidArgument,
      );
      await rejects(
        c.deleteSnapshot({ name: 'minimal', teamId: '', templateId: templateIdZero }),
        Code.InvalidArgument,
      );
    }
    await rejects(c.deleteSnapshot({ name: '../x', teamId: team, templateId }), Code.InvalidArgument);
    assert.ok(fs.existsSync(path.join(agent.layout.minimalTemplateDir, 'rootfs', 'bin')), 'minimal untouched');
    await rejects(c.createSnapshot({ sandboxId: newCapsuleId(), name: 'ok', teamId: team, templateId }), Code.NotFound);
    await rejects(
      c.createSnapshot({ sandboxId: 'cl-../../x', name: 'ok', teamId: team, templateId }),
      Code.InvalidArgument,
    );
    assert.deepEqual(teamEntries(), before, 'nothing written');
    await c.destroySandbox({ sandboxId: src });
  });

  test('deleting a template in use: gone for new capsules, kept for running ones until they are destroyed', async () => {
    const src = newCapsuleId();
    await c.createSandbox({ sandboxId: src, template: 'minimal' });
    await run(src, 'echo base > /root/v.txt');
    const templateId = newUuid();
    await c.createSnapshot({ sandboxId: src, name: 'in-use', teamId: team, templateId });
    await c.destroySandbox({ sandboxId: src });

    const user = newCapsuleId();
    await c.createSandbox({ sandboxId: user, template: 'in-use', teamId: team, templateId });
    await c.deleteSnapshot({ name: 'in-use', teamId: team, templateId });
    await rejects(
      c.createSandbox({ sandboxId: newCapsuleId(), template: 'in-use', teamId: team, templateId }),
      Code.NotFound,
    );
    // The capsule still reads files that only its (deleted) template holds.
    assert.equal(await run(user, 'cat /root/v.txt && ls /bin/sh'), 'base\n/bin/sh\n');
    assert.equal(teamEntries().filter((n) => n.includes('.deleted-')).length, 1, 'kept aside while in use');

    // A snapshot of that capsule reuses the name under a new id (the overwrite flow).
    const next = newUuid();
    await c.createSnapshot({ sandboxId: user, name: 'in-use', teamId: team, templateId: next });

    // Restart: the in-use record survives, a half-written snapshot is swept.
    const stale = agent.layout.templateSibling(agent.layout.templateDir(team, newUuid()), 'tmp', 'deadbeef');
    fs.mkdirSync(path.join(stale, 'rootfs'), { recursive: true });
    assert.equal(await agent.stop(), 0);
    agent = await startAgent({ prefix: PREFIX, subnet: SUBNET, dataDir: agent.dataDir });
    c = agent.client;
    assert.ok(!fs.existsSync(stale), 'stale temporary snapshot removed at start');
    assert.equal(teamEntries().filter((n) => n.includes('.deleted-')).length, 1);
    assert.equal(await run(user, 'cat /root/v.txt'), 'base\n');

    await c.destroySandbox({ sandboxId: user });
    assert.deepEqual(
      teamEntries().filter((n) => n.startsWith('.')),
      [],
      'deleted template removed with its last capsule',
    );
    await c.deleteSnapshot({ name: 'in-use', teamId: team, templateId: next });
    assert.deepEqual(teamEntries(), []);
  });
});
