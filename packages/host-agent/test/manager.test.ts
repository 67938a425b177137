// The sandbox manager checks its inputs itself, not only at the RPC edge:
// called directly (real ContainerRuntime, temp data directory), bad input is
// refused with a precise error before anything is made.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Code, ConnectError } from '@connectrpc/connect';
import { Layout } from '../src/layout.js';
import { SandboxManager, type CreateParams } from '../src/manager.js';
import { ContainerRuntime } from '../src/runtime/container.js';
import { makeDataDir, newCapsuleId, removeDataDir } from './agent-harness.js';

const silent = { debug() {}, info() {}, warn() {}, error() {} };

async function rejects(p: Promise<unknown> | (() => unknown), code: Code, re: RegExp): Promise<void> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    assert.equal(Code[err.code], Code[code], err.message);
    assert.match(err.rawMessage, re);
    return;
  }
  assert.fail(`expected ${Code[code]}`);
}

describe('sandbox manager input checks', () => {
  let dir: string;
  let layout: Layout;
  let manager: SandboxManager;

  before(() => {
    dir = makeDataDir();
    layout = new Layout(dir);
    const runtime = new ContainerRuntime({ layout, netPrefix: 'htm', subnet: '10.234.0.0/24', log: silent });
    manager = new SandboxManager({ runtime, layout, log: silent });
  });
  after(() => removeDataDir(dir));

  const params = (over: Partial<CreateParams> = {}): CreateParams => ({
    id: newCapsuleId(),
    template: 'minimal',
    teamId: '',
    templateId: '',
    vcpus: 1,
    memoryMb: 256,
    diskSizeMb: 512,
    timeoutSec: 0,
    ...over,
  });

  test('create refuses unsafe templates, bad ids and out-of-range resources', async () => {
    const cases: [Partial<CreateParams>, Code, RegExp][] = [
      [{ template: '../../etc' }, Code.InvalidArgument, /not a valid template name/],
      [{ template: 'a/b' }, Code.InvalidArgument, /not a valid template name/],
      [{ template: 'x..y' }, Code.InvalidArgument, /not a valid template name/],
      [{ id: 'cl-../../x' }, Code.InvalidArgument, /sandbox_id must be a capsule id/],
      [{ id: 'sb-abc' }, Code.InvalidArgument, /sandbox_id must be a capsule id/],
      [{ teamId: '../../..' }, Code.InvalidArgument, /team_id must be a UUID/],
      [{ vcpus: -2 }, Code.InvalidArgument, /vcpus/],
      [{ vcpus: 1.5 }, Code.InvalidArgument, /vcpus/],
      [{ memoryMb: 100 }, Code.InvalidArgument, /memory_mb/],
      [{ memoryMb: Number.MAX_SAFE_INTEGER }, Code.InvalidArgument, /memory_mb/],
      [{ diskSizeMb: 100 }, Code.InvalidArgument, /disk_size_mb/],
      [{ diskSizeMb: 200 * 1024 }, Code.InvalidArgument, /disk_size_mb/],
      [{ timeoutSec: -1 }, Code.InvalidArgument, /timeout_sec/],
      [{ defaultUser: '../root' }, Code.InvalidArgument, /default_user/],
      [{ defaultEnv: { 'BAD=KEY': 'x' } }, Code.InvalidArgument, /default_env/],
      [{ template: 'other' }, Code.NotFound, /template "other" not found/],
      [
        { teamId: '11111111-1111-1111-1111-111111111111', templateId: '22222222-2222-2222-2222-222222222222' },
        Code.NotFound,
        /not found on this host/,
      ],
    ];
    for (const [over, code, re] of cases) await rejects(manager.create(params(over)), code, re);
    // Nothing was made for any of them.
    assert.equal(fs.existsSync(layout.sandboxesDir) && fs.readdirSync(layout.sandboxesDir).length > 0, false);
    assert.equal(fs.existsSync(layout.capsuleMetaDir) && fs.readdirSync(layout.capsuleMetaDir).length > 0, false);
    assert.deepEqual(manager.list().capsules, []);
  });

  test('operations on unknown or malformed ids', async () => {
    const unknown = newCapsuleId();
    await rejects(manager.destroy(unknown), Code.NotFound, /not found on this host/);
    await rejects(manager.pause(unknown), Code.NotFound, /not found/);
    await rejects(manager.resume(unknown, { timeoutSec: 0 }), Code.NotFound, /not found/);
    await rejects(() => manager.ping(unknown), Code.NotFound, /not found/);
    await rejects(() => manager.getMetrics(unknown, '5m'), Code.NotFound, /not found/);
    await rejects(() => manager.ping('../etc/passwd'), Code.InvalidArgument, /capsule id/);
    await rejects(manager.readFile(unknown, '', ''), Code.InvalidArgument, /path is required/);
    await rejects(manager.killProcess(unknown, { pid: 1 }, 'SIGSTOP'), Code.InvalidArgument, /SIGKILL or SIGTERM/);
    await rejects(manager.ptyResize(unknown, 'ok-tag', 0, 10), Code.InvalidArgument, /cols/);
    await rejects(manager.ptySendInput(unknown, 'bad/tag', new Uint8Array()), Code.InvalidArgument, /tag/);
    await rejects(manager.listDir(unknown, '/', 99, ''), Code.InvalidArgument, /depth/);
  });
});
