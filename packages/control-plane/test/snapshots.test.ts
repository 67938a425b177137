// Snapshots and templates end to end: a real control plane on PostgreSQL, a
// real host agent and real capsules, driven through the public API. A
// capsule's files become a team template that new capsules start from, with
// its defaults; platform templates are read-only; other teams see nothing.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { parseId, uuidToBase36 } from '@wrenn/contracts';
import { startPlatform, waitFor, type Platform, type TeamCredentials } from '@wrenn/testkit';
import { api, type Resp } from './capsules-helpers.js';

describe('snapshots and templates', () => {
  let p: Platform;
  let call: ReturnType<typeof api>;
  let other: TeamCredentials;
  let otherCall: ReturnType<typeof api>;
  let src: string; // a running capsule with files, snapshotted by several tests
  let teamUuid: string;

  const ok = (r: Resp, status: number) => assert.equal(r.status, status, JSON.stringify(r.body));
  const sh = async (cid: string, script: string) => {
    const r = await call('POST', `/v1/capsules/${cid}/exec`, { cmd: '/bin/sh', args: ['-c', script] });
    ok(r, 200);
    return r.body.stdout as string;
  };
  const newCapsule = async (body: object = {}) => {
    const r = await call('POST', '/v1/capsules', body);
    ok(r, 201);
    return r.body as { id: string; template: string; vcpus: number; memory_mb: number; status: string };
  };
  const templateRow = async (name: string) =>
    (await p.pg.query('SELECT * FROM templates WHERE team_id = $1 AND name = $2', [teamUuid, name])).rows[0];
  const teamTemplateDirs = () => {
    const dir = path.join(p.agents[0]!.dataDir, 'images', 'teams', uuidToBase36(teamUuid));
    return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => !n.startsWith('.')) : [];
  };
  const errorOf = (r: Resp, status: number, code?: string) => {
    ok(r, status);
    if (code) assert.equal(r.body.error.code, code, JSON.stringify(r.body));
  };

  before(async () => {
    p = await startPlatform({ prefix: 'tpl', subnetBase: '10.250', agents: 1 });
    call = api(p.baseUrl, { apiKey: p.apiKey });
    other = await p.newTeam();
    otherCall = api(p.baseUrl, { apiKey: other.apiKey });
    teamUuid = parseId('team', p.teamId);
    src = (await newCapsule({ memory_mb: 768 })).id;
    await sh(src, 'echo v1 > /home/user/hello.txt && mkdir -p /srv && echo data > /srv/data.txt && rm /etc/issue');
  });

  after(async () => {
    await p?.stop();
  });

  it('lists the built-in minimal template for every team', async () => {
    for (const c of [call, otherCall]) {
      const r = await c('GET', '/v1/snapshots');
      ok(r, 200);
      const minimal = (r.body as { name: string }[]).find((t) => t.name === 'minimal');
      assert.deepEqual(minimal && { ...minimal, created_at: 'x' }, {
        name: 'minimal',
        type: 'base',
        vcpus: null,
        memory_mb: null,
        size_bytes: 0,
        created_at: 'x',
        platform: true,
        metadata: {},
      });
    }
    const snaps = await call('GET', '/v1/snapshots?type=snapshot');
    ok(snaps, 200);
    assert.ok(!(snaps.body as { name: string }[]).some((t) => t.name === 'minimal'));
    errorOf(await call('GET', '/v1/snapshots?type=other'), 400, 'invalid_request');
  });

  it('snapshots a running capsule; a new capsule from it has the files and the baked-in resources', async () => {
    const r = await call('POST', '/v1/snapshots', { sandbox_id: src, name: 'tpl-one' });
    ok(r, 201);
    assert.equal(r.body.name, 'tpl-one');
    assert.equal(r.body.type, 'snapshot');
    assert.equal(r.body.vcpus, 1);
    assert.equal(r.body.memory_mb, 768);
    assert.equal(r.body.platform, false);
    assert.ok(r.body.size_bytes > 1024 * 1024, `size_bytes ${r.body.size_bytes}`);
    // The source is left running, and still works.
    assert.equal((await call('GET', `/v1/capsules/${src}`)).body.status, 'running');
    assert.equal(await sh(src, 'cat /home/user/hello.txt'), 'v1\n');

    const row = await templateRow('tpl-one');
    assert.equal(row.type, 'snapshot');
    assert.equal(row.host_id, parseId('host', p.agents[0]!.hostId), 'the host holding the files is recorded');

    // Resources come from the snapshot, not the request.
    const copy = await newCapsule({ template: 'tpl-one', memory_mb: 512 });
    assert.equal(copy.template, 'tpl-one');
    assert.equal(copy.memory_mb, 768);
    assert.equal(await sh(copy.id, 'cat /home/user/hello.txt /srv/data.txt'), 'v1\ndata\n');
    assert.equal(await sh(copy.id, 'test -e /etc/issue && echo yes || echo no'), 'no\n');
    const sb = await p.pg.query('SELECT template_id, template_team_id FROM sandboxes WHERE id = $1', [
      parseId('capsule', copy.id),
    ]);
    assert.deepEqual(sb.rows[0], { template_id: row.id, template_team_id: teamUuid });
    ok(await call('DELETE', `/v1/capsules/${copy.id}`), 204);

    const list = await call('GET', '/v1/snapshots');
    const names = (list.body as { name: string }[]).map((t) => t.name);
    assert.ok(names.includes('minimal') && names.includes('tpl-one'), names.join(','));

    const audit = await p.pg.query(
      "SELECT action, status, metadata FROM audit_logs WHERE resource_type = 'template' AND resource_id = 'tpl-one'",
    );
    assert.equal(audit.rows.length, 1);
    assert.equal(audit.rows[0].action, 'snapshot.create');
    assert.equal(audit.rows[0].metadata.capsule_id, src);
  });

  it("applies the template's default user and environment, and a snapshot inherits them", async () => {
    // No API sets defaults yet (recipe builds will): set them on the row.
    await p.pg.query(
      `UPDATE templates SET default_user = 'root', default_env = '{"GREETING":"hello"}' WHERE team_id = $1 AND name = 'tpl-one'`,
      [teamUuid],
    );
    const c = await newCapsule({ template: 'tpl-one' });
    assert.equal(await sh(c.id, 'id -un; echo "$GREETING"'), 'root\nhello\n');
    const r = await call('POST', '/v1/snapshots', { sandbox_id: c.id });
    ok(r, 201);
    assert.match(r.body.name, /^template-[0-9a-f]{8}$/, 'default name');
    const row = await templateRow(r.body.name);
    assert.equal(row.default_user, 'root');
    assert.deepEqual(row.default_env, { GREETING: 'hello' });
    ok(await call('DELETE', `/v1/capsules/${c.id}`), 204);
    ok(await call('DELETE', `/v1/snapshots/${r.body.name}`), 204);
  });

  it("another team can neither see, use, snapshot into, nor delete the team's templates", async () => {
    const list = await otherCall('GET', '/v1/snapshots');
    assert.ok(!(list.body as { name: string }[]).some((t) => t.name === 'tpl-one'));
    errorOf(await otherCall('POST', '/v1/capsules', { template: 'tpl-one' }), 404, 'template_not_found');
    errorOf(await otherCall('DELETE', '/v1/snapshots/tpl-one'), 404, 'template_not_found');
    errorOf(await otherCall('POST', '/v1/snapshots', { sandbox_id: src, name: 'stolen' }), 404);
    assert.ok(await templateRow('tpl-one'), 'still there');
  });

  it('platform templates: a team cannot delete them (403, nothing touched) nor take their names', async () => {
    const minimalDir = path.join(p.agents[0]!.dataDir, 'images', 'minimal', 'rootfs', 'bin');
    errorOf(await call('DELETE', '/v1/snapshots/minimal'), 403, 'forbidden');
    errorOf(await otherCall('DELETE', '/v1/snapshots/minimal'), 403, 'forbidden');
    const rows = await p.pg.query("SELECT id, team_id FROM templates WHERE name = 'minimal'");
    assert.deepEqual(rows.rows, [
      { id: '00000000-0000-0000-0000-000000000000', team_id: '00000000-0000-0000-0000-000000000000' },
    ]);
    assert.ok(fs.existsSync(minimalDir), 'minimal files untouched');
    errorOf(await call('POST', '/v1/snapshots', { sandbox_id: src, name: 'minimal' }), 409, 'name_reserved');
    errorOf(
      await call('POST', '/v1/snapshots?overwrite=true', { sandbox_id: src, name: 'minimal' }),
      409,
      'name_reserved',
    );
    const c = await newCapsule(); // minimal still works
    ok(await call('DELETE', `/v1/capsules/${c.id}`), 204);
  });

  it('bad names and ids are 400s that change nothing', async () => {
    const before = teamTemplateDirs().sort();
    for (const name of ['', '../x', 'a/b', '.hidden', '-x', 'a..b', 'x'.repeat(65), 'sp ace']) {
      errorOf(await call('POST', '/v1/snapshots', { sandbox_id: src, name }), 400, 'invalid_request');
    }
    errorOf(await call('POST', '/v1/snapshots', { sandbox_id: 'cl-nope', name: 'x' }), 400);
    errorOf(await call('POST', '/v1/snapshots', { name: 'x' }), 400);
    errorOf(await call('POST', '/v1/snapshots', { sandbox_id: src, name: 'x', extra: 1 }), 400);
    errorOf(await call('POST', '/v1/snapshots?overwrite=yes', { sandbox_id: src, name: 'x' }), 400);
    errorOf(await call('DELETE', '/v1/snapshots/..x'), 400);
    errorOf(await call('DELETE', '/v1/snapshots/..%2Fminimal'), 400);
    errorOf(await call('DELETE', '/v1/snapshots/a..b'), 400);
    errorOf(await call('POST', '/v1/capsules', { template: '../minimal' }), 400);
    errorOf(await call('POST', '/v1/capsules', { template: 'no-such' }), 404, 'template_not_found');
    assert.deepEqual(teamTemplateDirs().sort(), before);
  });

  it('a taken name is a 409 unless overwrite=true, which replaces the old template', async () => {
    errorOf(await call('POST', '/v1/snapshots', { sandbox_id: src, name: 'tpl-one' }), 409, 'template_name_taken');
    const old = await templateRow('tpl-one');
    await sh(src, 'echo v2 > /home/user/hello.txt');
    const r = await call('POST', '/v1/snapshots?overwrite=true', { sandbox_id: src, name: 'tpl-one' });
    ok(r, 201);
    const row = await templateRow('tpl-one');
    assert.notEqual(row.id, old.id);
    assert.ok(!teamTemplateDirs().includes(uuidToBase36(old.id)), 'old files removed');
    assert.ok(teamTemplateDirs().includes(uuidToBase36(row.id)));
    const c = await newCapsule({ template: 'tpl-one' });
    assert.equal(await sh(c.id, 'cat /home/user/hello.txt'), 'v2\n');
    ok(await call('DELETE', `/v1/capsules/${c.id}`), 204);
  });

  it('after delete the template is gone: 404 to create from it or delete it again', async () => {
    const row = await templateRow('tpl-one');
    ok(await call('DELETE', '/v1/snapshots/tpl-one'), 204);
    assert.equal(await templateRow('tpl-one'), undefined);
    assert.ok(!teamTemplateDirs().includes(uuidToBase36(row.id)), 'files removed from the host');
    errorOf(await call('POST', '/v1/capsules', { template: 'tpl-one' }), 404, 'template_not_found');
    errorOf(await call('DELETE', '/v1/snapshots/tpl-one'), 404, 'template_not_found');
    const audit = await p.pg.query(
      "SELECT action FROM audit_logs WHERE resource_type = 'template' AND resource_id = 'tpl-one' ORDER BY created_at",
    );
    assert.deepEqual(
      audit.rows.map((a) => a.action),
      ['snapshot.create', 'snapshot.create', 'snapshot.delete'],
    );
  });

  it('a paused capsule stays paused; a stopped one cannot be snapshotted (409)', async () => {
    const c = await newCapsule();
    await sh(c.id, 'echo paused > /root/p.txt');
    ok(await call('POST', `/v1/capsules/${c.id}/pause`), 200);
    const r = await call('POST', '/v1/snapshots', { sandbox_id: c.id, name: 'from-paused' });
    ok(r, 201);
    assert.equal((await call('GET', `/v1/capsules/${c.id}`)).body.status, 'paused');
    ok(await call('POST', `/v1/capsules/${c.id}/resume`), 200);
    ok(await call('DELETE', `/v1/capsules/${c.id}`), 204);
    errorOf(await call('POST', '/v1/snapshots', { sandbox_id: c.id, name: 'from-stopped' }), 409, 'invalid_state');
    assert.equal(await templateRow('from-stopped'), undefined);
    const copy = await newCapsule({ template: 'from-paused' });
    assert.equal(await sh(copy.id, 'cat /root/p.txt'), 'paused\n');
    ok(await call('DELETE', `/v1/capsules/${copy.id}`), 204);
    ok(await call('DELETE', '/v1/snapshots/from-paused'), 204);
  });

  it('a client that disconnects during a long snapshot does not break it', async () => {
    const c = await newCapsule();
    // Enough data that the copy takes a while after the request was sent.
    await sh(c.id, 'head -c 300M /dev/urandom > /root/big.bin && sha256sum /root/big.bin > /root/big.sum');
    const ac = new AbortController();
    const sent = fetch(`${p.baseUrl}/v1/snapshots`, {
      method: 'POST',
      headers: { 'x-api-key': p.apiKey, 'content-type': 'application/json' },
      body: JSON.stringify({ sandbox_id: c.id, name: 'left-behind' }),
      signal: ac.signal,
    });
    // The capsule is marked paused as soon as the host work starts: then the client goes away.
    await waitFor(
      'the snapshot to start',
      async () =>
        (await call('GET', `/v1/capsules/${c.id}`)).body.status === 'paused' ||
        (await templateRow('left-behind')) !== undefined,
    );
    ac.abort();
    await sent.then((r) => r.body?.cancel()).catch(() => {}); // aborted (or, on a fast disk, already answered)
    await waitFor('the template', async () => (await templateRow('left-behind')) !== undefined);
    await waitFor(
      'the capsule back to running',
      async () => (await call('GET', `/v1/capsules/${c.id}`)).body.status === 'running',
    );
    const copy = await newCapsule({ template: 'left-behind' });
    assert.equal(await sh(copy.id, 'sha256sum -c /root/big.sum >/dev/null && echo intact'), 'intact\n');
    ok(await call('DELETE', `/v1/capsules/${copy.id}`), 204);
    ok(await call('DELETE', `/v1/capsules/${c.id}`), 204);
    ok(await call('DELETE', '/v1/snapshots/left-behind'), 204);
  });
});
