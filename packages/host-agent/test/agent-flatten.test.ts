// FlattenRootfs and START commands through the real host agent: a capsule's
// file system becomes a base template and the capsule is gone; a capsule
// created with start commands runs them (tagged start-N) with their user,
// directory and environment; bad start commands are refused; nothing leaks.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Code } from '@connectrpc/connect';
import { newUuid } from '@wrenn/contracts';
import { newCapsuleId, removeDataDir, startAgent, type AgentClient, type RunningAgent } from './agent-harness.js';
import { assertNoLeaks } from './agent-leaks.js';
import { rejects, sh, text } from './rpc-asserts.js';

const PREFIX = 'fla';
const SUBNET = '10.239.0.0/24';

describe('host agent flatten and start commands', () => {
  let agent: RunningAgent;
  let c: AgentClient;
  const team = newUuid();
  const run = async (id: string, script: string) => text((await c.exec({ sandboxId: id, ...sh(script) })).stdout);

  before(async () => {
    agent = await startAgent({ prefix: PREFIX, subnet: SUBNET });
    c = agent.client;
  });

  after(async () => {
    if (!agent) return;
    assert.equal(await agent.terminate(), 0);
    await assertNoLeaks(PREFIX, agent.dataDir);
    removeDataDir(agent.dataDir);
  });

  test('flatten: the files become a base template, the capsule is destroyed', async () => {
    const src = newCapsuleId();
    await c.createSandbox({ sandboxId: src, template: 'minimal' });
    await run(src, 'mkdir -p /srv && echo flat > /srv/f.txt && rm /etc/issue');
    const templateId = newUuid();
    await rejects(
      c.flattenRootfs({ sandboxId: src, name: '', teamId: team, templateId }),
      Code.InvalidArgument,
      /name/,
    );
    const res = await c.flattenRootfs({ sandboxId: src, name: 'flat-a', teamId: team, templateId });
    assert.ok(res.sizeBytes > 1024n * 1024n, `size ${res.sizeBytes}`);
    const dir = agent.layout.templateDir(team, templateId);
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'template.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(meta.type, 'base');
    assert.equal(meta.name, 'flat-a');
    assert.deepEqual(
      (await c.listSandboxes({})).sandboxes.map((s) => s.sandboxId),
      [],
    );
    await rejects(c.pingSandbox({ sandboxId: src }), Code.NotFound);
    // No half-written siblings.
    assert.deepEqual(
      fs.readdirSync(path.dirname(dir)).filter((n) => n.startsWith('.')),
      [],
    );

    const next = newCapsuleId();
    await c.createSandbox({ sandboxId: next, template: 'flat-a', teamId: team, templateId });
    assert.equal(await run(next, 'cat /srv/f.txt; test -e /etc/issue || echo gone'), 'flat\ngone\n');
    await c.destroySandbox({ sandboxId: next });
    await c.deleteSnapshot({ name: 'flat-a', teamId: team, templateId });
  });

  test('start commands run in the background with their user, directory and env', async () => {
    const id = newCapsuleId();
    await c.createSandbox({
      sandboxId: id,
      template: 'minimal',
      startCommands: [
        {
          cmd: 'echo "$GREETING $(whoami) $(pwd)" > /tmp/started.txt; exec sleep 1000',
          user: 'user',
          cwd: '/home/user',
          env: { GREETING: 'hi' },
        },
        { cmd: 'sleep 1000', user: 'root', cwd: '/', env: {} },
      ],
    });
    const procs = (await c.listProcesses({ sandboxId: id })).processes.map((p) => p.tag).sort();
    assert.deepEqual(procs, ['start-0', 'start-1']);
    let out = '';
    for (let i = 0; i < 100 && !out; i++) {
      out = await run(id, 'cat /tmp/started.txt 2>/dev/null || true');
      if (!out) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(out, 'hi user /home/user\n');
    await c.destroySandbox({ sandboxId: id });

    // A start command that cannot start fails the create, which leaves nothing behind.
    const bad = newCapsuleId();
    await rejects(
      c.createSandbox({
        sandboxId: bad,
        template: 'minimal',
        startCommands: [{ cmd: 'true', user: 'root', cwd: '/no/such/dir', env: {} }],
      }),
      Code.Unavailable,
      /START command 0/,
    );
    await rejects(
      c.createSandbox({
        sandboxId: bad,
        template: 'minimal',
        startCommands: [{ cmd: '', user: '', cwd: '', env: {} }],
      }),
      Code.InvalidArgument,
      /start_commands\[0\]\.cmd/,
    );
    assert.deepEqual(
      (await c.listSandboxes({})).sandboxes.map((s) => s.sandboxId),
      [],
    );
  });
});
