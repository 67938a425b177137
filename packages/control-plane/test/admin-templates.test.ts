// Admin templates and template clean-up end to end: a real control plane on
// PostgreSQL, two real host agents and real capsules. Platform admins list
// every team's templates and delete platform templates (files on every host
// first, then the row; a host that holds them being down keeps everything);
// deleting a team removes its templates, converging once a downed host is
// back; stored templates stay sparse and are sized by what they take on disk.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { formatId, parseId, PLATFORM_UUID, uuidToBase36 } from '@wrenn/contracts';
import { startPlatform, waitFor, type Platform, type TeamCredentials } from '@wrenn/testkit';
import { api, type Resp } from './capsules-helpers.js';

const MiB = 2 ** 20;

describe('admin templates and template clean-up', () => {
  let p: Platform;
  let admin: ReturnType<typeof api>; // the admin's team, by API key
  let adminJwt: ReturnType<typeof api>;
  let teamB: TeamCredentials;
  let callB: ReturnType<typeof api>;
  let adminTeam: string; // uuid
  const capsules: { call: ReturnType<typeof api>; id: string }[] = [];

  const ok = (r: Resp, status: number) => assert.equal(r.status, status, JSON.stringify(r.body));
  const errorOf = (r: Resp, status: number, code?: string) => {
    ok(r, status);
    if (code) assert.equal(r.body.error.code, code, JSON.stringify(r.body));
  };
  const agentIndexOf = (hostUuid: string) => p.agents.findIndex((a) => parseId('host', a.hostId) === hostUuid);
  const templateDir = (agent: number, teamUuid: string, templateUuid: string) =>
    path.join(p.agents[agent]!.dataDir, 'images', 'teams', uuidToBase36(teamUuid), uuidToBase36(templateUuid));
  const row = async (id: string) => (await p.pg.query('SELECT * FROM templates WHERE id = $1', [id])).rows[0];
  const sh = async (call: ReturnType<typeof api>, cid: string, script: string) => {
    const r = await call('POST', `/v1/capsules/${cid}/exec`, { cmd: '/bin/sh', args: ['-c', script] });
    ok(r, 200);
    assert.equal(r.body.exit_code, 0, JSON.stringify(r.body));
    return r.body.stdout as string;
  };
  const hostOfCapsule = async (id: string) =>
    (await p.pg.query('SELECT host_id FROM sandboxes WHERE id = $1', [parseId('capsule', id)])).rows[0]
      .host_id as string;

  /** A running capsule of the caller's team, on agent `agent` when given (the scheduler spreads them). */
  const capsule = async (call: ReturnType<typeof api>, agent?: number): Promise<string> => {
    for (let i = 0; i < 6; i++) {
      const r = await call('POST', '/v1/capsules', {});
      ok(r, 201);
      capsules.push({ call, id: r.body.id });
      if (agent === undefined || agentIndexOf(await hostOfCapsule(r.body.id)) === agent) return r.body.id;
    }
    throw new Error(`no capsule landed on agent ${agent}`);
  };
  /** Snapshots a capsule; returns the template's row. */
  const snapshot = async (call: ReturnType<typeof api>, cid: string, name: string) => {
    const r = await call('POST', '/v1/snapshots', { sandbox_id: cid, name });
    ok(r, 201);
    const rows = await p.pg.query('SELECT * FROM templates WHERE name = $1 ORDER BY created_at DESC', [name]);
    return rows.rows[0] as { id: string; team_id: string; host_id: string | null; size_bytes: string };
  };
  /**
   * A platform template. No API makes one yet (recipe builds will), so a
   * snapshot of the admin's team is moved to the platform team: its row in
   * the database and its directory on the host, where the agent keeps
   * templates by team.
   */
  const platformTemplate = async (name: string, agent?: number) => {
    const t = await snapshot(admin, await capsule(admin, agent), name);
    const holder = agentIndexOf(t.host_id!);
    const to = templateDir(holder, PLATFORM_UUID, t.id);
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.renameSync(templateDir(holder, adminTeam, t.id), to);
    await p.pg.query('UPDATE templates SET team_id = $1 WHERE id = $2', [PLATFORM_UUID, t.id]);
    return { id: t.id, holder };
  };
  const hostStatus = async (agent: number) =>
    (await p.pg.query('SELECT status FROM hosts WHERE id = $1', [parseId('host', p.agents[agent]!.hostId)])).rows[0]
      .status as string;

  before(async () => {
    p = await startPlatform({
      prefix: 'adm',
      subnetBase: '10.248',
      agents: 2,
      // A killed agent is marked unreachable within seconds, so "host down" is what the database says too.
      cpEnv: { WRENN_HOST_HEARTBEAT_TIMEOUT_SEC: '10' },
    });
    admin = api(p.baseUrl, { apiKey: p.apiKey });
    adminJwt = api(p.baseUrl, { jwt: p.adminJwt });
    teamB = await p.newTeam();
    callB = api(p.baseUrl, { apiKey: teamB.apiKey });
    adminTeam = parseId('team', p.teamId);
  });

  after(async () => {
    await p?.stop();
  });

  it("lists every team's templates and the platform's, to platform admins only", async () => {
    const a = await snapshot(admin, await capsule(admin), 'a-snap');
    const b = await snapshot(callB, await capsule(callB), 'b-snap');
    const plat = await platformTemplate('plat-listed');

    const r = await adminJwt('GET', '/v1/admin/templates');
    ok(r, 200);
    const byName = new Map((r.body as { name: string }[]).map((t) => [t.name, t as Record<string, unknown>]));
    const hostWire = (uuid: string) => formatId('host', uuid);
    assert.deepEqual(
      { ...byName.get('minimal'), created_at: 'x' },
      {
        name: 'minimal',
        type: 'base',
        vcpus: null,
        memory_mb: null,
        size_bytes: 0,
        created_at: 'x',
        platform: true,
        metadata: {},
        team_id: formatId('team', PLATFORM_UUID),
        host_id: null,
        team_deleted: false,
      },
    );
    assert.equal(byName.get('a-snap')!.team_id, p.teamId);
    assert.equal(byName.get('a-snap')!.platform, false);
    assert.equal(byName.get('a-snap')!.host_id, hostWire(a.host_id!));
    assert.equal(byName.get('b-snap')!.team_id, teamB.teamId);
    assert.equal(byName.get('b-snap')!.type, 'snapshot');
    assert.equal(byName.get('b-snap')!.host_id, hostWire(b.host_id!));
    assert.ok((byName.get('b-snap')!.size_bytes as number) > MiB);
    assert.equal(byName.get('plat-listed')!.platform, true);
    assert.equal(byName.get('plat-listed')!.team_id, formatId('team', PLATFORM_UUID));
    assert.equal(byName.get('plat-listed')!.host_id, p.agents[plat.holder]!.hostId);

    // Not for anyone else: a user who is not a platform admin, an API key (even the admin team's), nobody.
    errorOf(await api(p.baseUrl, { jwt: teamB.jwt })('GET', '/v1/admin/templates'), 403, 'forbidden');
    errorOf(await admin('GET', '/v1/admin/templates'), 401);
    errorOf(await api(p.baseUrl, {})('GET', '/v1/admin/templates'), 401);
    errorOf(await api(p.baseUrl, { jwt: teamB.jwt })('DELETE', '/v1/admin/templates/plat-listed'), 403, 'forbidden');
    assert.ok(await row(plat.id), 'a refused delete changes nothing');
    assert.ok(fs.existsSync(templateDir(plat.holder, PLATFORM_UUID, plat.id)));
  });

  it('a team cannot delete a platform template: 403 before any file is touched', async () => {
    const plat = await platformTemplate('plat-guarded');
    for (const call of [admin, callB]) {
      errorOf(await call('DELETE', '/v1/snapshots/plat-guarded'), 403, 'forbidden');
    }
    assert.ok(await row(plat.id));
    assert.ok(fs.existsSync(path.join(templateDir(plat.holder, PLATFORM_UUID, plat.id), 'rootfs', 'bin')));
    // And the platform template still makes capsules.
    const r = await callB('POST', '/v1/capsules', { template: 'plat-guarded' });
    ok(r, 201);
    capsules.push({ call: callB, id: r.body.id });
  });

  it("an admin deletes a platform template: its files on the host, then its row; it's audited", async () => {
    const plat = await platformTemplate('plat-doomed');
    const dir = templateDir(plat.holder, PLATFORM_UUID, plat.id);
    assert.ok(fs.existsSync(dir));
    ok(await adminJwt('DELETE', '/v1/admin/templates/plat-doomed'), 204);
    assert.ok(!fs.existsSync(dir), 'files removed from the host');
    assert.equal(await row(plat.id), undefined);
    errorOf(await adminJwt('DELETE', '/v1/admin/templates/plat-doomed'), 404, 'template_not_found');
    errorOf(await callB('POST', '/v1/capsules', { template: 'plat-doomed' }), 404, 'template_not_found');
    const audit = await p.pg.query(
      "SELECT team_id, action, scope, actor_id FROM audit_logs WHERE resource_type = 'template' AND resource_id = 'plat-doomed' AND action = 'delete'",
    );
    assert.equal(audit.rows.length, 1);
    assert.equal(audit.rows[0].team_id, PLATFORM_UUID);
    assert.equal(audit.rows[0].scope, 'admin');
  });

  it('minimal is not deletable; unknown, bad and team-only names change nothing', async () => {
    const minimalBin = path.join(p.agents[0]!.dataDir, 'images', 'minimal', 'rootfs', 'bin');
    const del = (name: string) => adminJwt('DELETE', `/v1/admin/templates/${name}`);
    const r = await del('minimal');
    errorOf(r, 403, 'forbidden');
    assert.match(r.body.error.message, /built-in/);
    assert.ok(fs.existsSync(minimalBin));
    assert.equal((await p.pg.query("SELECT count(*)::int AS n FROM templates WHERE name = 'minimal'")).rows[0].n, 1);
    errorOf(await del('no-such'), 404, 'template_not_found');
    errorOf(await del('a..b'), 400, 'invalid_request');
    errorOf(await del('..%2Fminimal'), 400, 'invalid_request');
    // b-snap is team B's: the admin route addresses platform templates only.
    const b = (await p.pg.query("SELECT id, team_id, host_id FROM templates WHERE name = 'b-snap'")).rows[0];
    errorOf(await del('b-snap'), 404, 'template_not_found');
    assert.ok(await row(b.id));
    assert.ok(fs.existsSync(templateDir(agentIndexOf(b.host_id), b.team_id, b.id)));
  });

  it('a holder host down: delete is a 503 that keeps row and files; once it is back the delete succeeds', async () => {
    // A platform template on every host (host_id NULL), as a template installed on each host would be.
    const plat = await platformTemplate('plat-everywhere', 0);
    const src = templateDir(0, PLATFORM_UUID, plat.id);
    const copy = templateDir(1, PLATFORM_UUID, plat.id);
    fs.mkdirSync(path.dirname(copy), { recursive: true });
    execFileSync('cp', ['-a', src, copy]);
    await p.pg.query('UPDATE templates SET host_id = NULL WHERE id = $1', [plat.id]);

    await p.agents[1]!.kill();
    await waitFor('agent 1 marked unreachable', async () => (await hostStatus(1)) === 'unreachable', 60_000);
    const r = await adminJwt('DELETE', '/v1/admin/templates/plat-everywhere');
    errorOf(r, 503, 'host_unavailable');
    assert.match(r.body.error.message, new RegExp(`${p.agents[1]!.hostId}.*unreachable`));
    assert.ok(await row(plat.id), 'row kept');
    assert.ok(fs.existsSync(src), 'nothing touched on the live host either');
    assert.ok(fs.existsSync(copy));

    await p.agents[1]!.start();
    ok(await adminJwt('DELETE', '/v1/admin/templates/plat-everywhere'), 204);
    assert.ok(!fs.existsSync(src) && !fs.existsSync(copy), 'files removed from both hosts');
    assert.equal(await row(plat.id), undefined);
  });

  it("a snapshot's host down: its delete is a 503 too, and works once the host is back", async () => {
    const plat = await platformTemplate('plat-on-one', 1);
    await p.agents[1]!.kill();
    const r = await adminJwt('DELETE', '/v1/admin/templates/plat-on-one');
    errorOf(r, 503, 'host_unavailable');
    assert.ok(await row(plat.id));
    await p.agents[1]!.start();
    ok(await adminJwt('DELETE', '/v1/admin/templates/plat-on-one'), 204);
    assert.ok(!fs.existsSync(templateDir(1, PLATFORM_UUID, plat.id)));
  });

  it("deleting a team removes its templates' files and rows, converging once a downed host is back", async () => {
    const c = await p.newTeam();
    const callC = api(p.baseUrl, { apiKey: c.apiKey });
    const teamC = parseId('team', c.teamId);
    const onLive = await snapshot(callC, await capsule(callC, 0), 'c-live');
    const onDown = await snapshot(callC, await capsule(callC, 1), 'c-down');
    assert.equal(agentIndexOf(onLive.host_id!), 0);
    assert.equal(agentIndexOf(onDown.host_id!), 1);
    const liveDir = templateDir(0, teamC, onLive.id);
    const downDir = templateDir(1, teamC, onDown.id);
    assert.ok(fs.existsSync(liveDir) && fs.existsSync(downDir));

    await p.agents[1]!.kill();
    ok(await api(p.baseUrl, { jwt: c.jwt })('DELETE', `/v1/teams/${c.teamId}`), 204);
    await waitFor(
      'the live host to lose the team template',
      async () => !fs.existsSync(liveDir) && !(await row(onLive.id)),
    );
    // The admin sees what is left, marked as going.
    const list = await adminJwt('GET', '/v1/admin/templates');
    const left = (list.body as { name: string; team_id: string; team_deleted: boolean }[]).find(
      (t) => t.team_id === c.teamId,
    );
    assert.deepEqual(left && { name: left.name, team_deleted: left.team_deleted }, {
      name: 'c-down',
      team_deleted: true,
    });
    assert.ok(await row(onDown.id), 'the row stays while its host is down');
    assert.ok(fs.existsSync(downDir));

    await p.agents[1]!.start();
    await waitFor('the host monitor to finish the job', async () => !fs.existsSync(downDir) && !(await row(onDown.id)));
    assert.equal(
      (await p.pg.query('SELECT count(*)::int AS n FROM templates WHERE team_id = $1', [teamC])).rows[0].n,
      0,
    );
  });

  it('a stored template stays sparse, and its size is what it takes on disk', async () => {
    const base = await snapshot(admin, await capsule(admin, 0), 'sparse-baseline');
    const cid = await capsule(admin, 0);
    await sh(admin, cid, 'truncate -s 100M /root/sparse.bin && head -c 20M /dev/urandom > /root/random.bin && sync');
    const t = await snapshot(admin, cid, 'sparse-files');
    const rootfs = path.join(templateDir(0, adminTeam, t.id), 'rootfs');
    const sparse = fs.statSync(path.join(rootfs, 'root', 'sparse.bin'));
    const random = fs.statSync(path.join(rootfs, 'root', 'random.bin'));
    assert.equal(sparse.size, 100 * MiB);
    assert.ok(sparse.blocks * 512 < MiB, `sparse file takes ${sparse.blocks * 512} bytes`);
    assert.ok(random.blocks * 512 >= 20 * MiB, `random file takes ${random.blocks * 512} bytes`);

    const size = Number(t.size_bytes);
    // Over a snapshot of a fresh capsule: the 20 MiB of data counts in full, the 100 MiB hole not at all.
    const grown = size - Number(base.size_bytes);
    assert.ok(grown >= 20 * MiB && grown < 28 * MiB, `template grew by ${grown} bytes over a fresh capsule's`);
    // size_bytes is the allocated size of the stored tree (each inode once), not its apparent size.
    let allocated = 0;
    const seen = new Set<number>();
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, e.name);
        const st = fs.lstatSync(full);
        if (!seen.has(st.ino)) {
          seen.add(st.ino);
          allocated += st.blocks * 512;
        }
        if (e.isDirectory()) walk(full);
      }
    };
    walk(rootfs);
    assert.ok(Math.abs(size - allocated) < MiB, `size_bytes ${size}, allocated ${allocated}`);
  });
});
