// Hosts end to end: a real control plane and real host agents registered
// through POST /v1/hosts → `--register`, heartbeats, token refresh, the host
// monitor, tags, permissions and deletion.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startPlatform, waitFor, type Platform, type TeamCredentials } from '@wrenn/testkit';

interface Resp {
  status: number;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

function client(baseUrl: string) {
  return async (
    method: string,
    url: string,
    opts: { jwt?: string; hostToken?: string; body?: unknown } = {},
  ): Promise<Resp> => {
    const res = await fetch(baseUrl + url, {
      method,
      headers: {
        ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(opts.jwt ? { authorization: `Bearer ${opts.jwt}` } : {}),
        ...(opts.hostToken ? { 'x-host-token': opts.hostToken } : {}),
      },
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
}

function credentials(dataDir: string): { host_id: string; token: string; refresh_token: string; agent_token: string } {
  return JSON.parse(fs.readFileSync(path.join(dataDir, 'host-credentials.json'), 'utf8'));
}

async function count(p: Platform, table: string): Promise<number> {
  const r = await p.pg.query(`SELECT count(*)::int AS n FROM ${table}`);
  return r.rows[0].n as number;
}

describe('hosts', () => {
  let p: Platform;
  let api: ReturnType<typeof client>;
  let other: TeamCredentials;

  before(async () => {
    p = await startPlatform({
      prefix: 'hst',
      subnetBase: '10.244',
      agents: 1,
      cpEnv: { WRENN_HOST_HEARTBEAT_TIMEOUT_SEC: '4', WRENN_HOST_MONITOR_INTERVAL_SEC: '0.5' },
      agentEnv: { WRENN_HEARTBEAT_INTERVAL_SEC: '1' },
    });
    api = client(p.baseUrl);
    other = await p.newTeam();
  });

  after(async () => {
    await p?.stop();
  });

  it('registers an agent with its specs and keeps it online with heartbeats', async () => {
    const agent = p.agents[0]!;
    const r = await api('GET', `/v1/hosts/${agent.hostId}`, { jwt: p.adminJwt });
    assert.equal(r.status, 200);
    assert.equal(r.body.status, 'online');
    assert.equal(r.body.type, 'regular');
    assert.equal(r.body.address, agent.address);
    assert.ok(r.body.cpu_cores >= 1 && r.body.memory_mb > 0 && r.body.disk_gb > 0);
    assert.equal('agent_token' in r.body, false, 'the agent secret is never returned');
    const first = Date.parse(r.body.last_heartbeat_at);
    await waitFor('a newer heartbeat', async () => {
      const again = await api('GET', `/v1/hosts/${agent.hostId}`, { jwt: p.adminJwt });
      return Date.parse(again.body.last_heartbeat_at) > first;
    });
    const creds = credentials(agent.dataDir);
    assert.equal(creds.host_id, agent.hostId);
    assert.equal(fs.statSync(path.join(agent.dataDir, 'host-credentials.json')).mode & 0o777, 0o600);
    // The secret is stored for the control plane's RPCs, never logged.
    assert.equal(p.cpLogs().includes(creds.agent_token), false);
    assert.equal(agent.output().includes(creds.agent_token), false);
    assert.equal(agent.output().includes(creds.refresh_token), false);
  });

  it('refuses a used, unknown or malformed registration and changes nothing', async () => {
    const created = await api('POST', '/v1/hosts', { jwt: p.adminJwt, body: { type: 'regular' } });
    assert.equal(created.status, 201);
    const token = created.body.registration_token as string;
    assert.match(token, /^[0-9a-f]{64}$/);
    const good = { token, address: '127.0.0.1:1', agent_token: randomBytes(32).toString('hex') };
    const hostsBefore = await count(p, 'hosts');
    const refreshBefore = await count(p, 'host_refresh_tokens');
    const bad: [unknown, number, RegExp][] = [
      [{ ...good, token: 'f'.repeat(64) }, 401, /invalid or expired registration token/],
      [{ ...good, address: 'not-an-address' }, 400, /address/],
      [{ ...good, address: '127.0.0.1:0' }, 400, /address/],
      [{ ...good, agent_token: 'short' }, 400, /agent_token/],
      [{ ...good, cpu_cores: -1 }, 400, /cpu_cores/],
      [{ ...good, extra: 1 }, 400, /extra/],
      [{ address: good.address, agent_token: good.agent_token }, 400, /token/],
    ];
    for (const [body, status, message] of bad) {
      const r = await api('POST', '/v1/hosts/register', { body });
      assert.equal(r.status, status, JSON.stringify(body));
      assert.match(r.body.error.message, message);
    }
    const host = await api('GET', `/v1/hosts/${created.body.host.id}`, { jwt: p.adminJwt });
    assert.equal(host.body.status, 'pending');
    assert.equal(await count(p, 'host_refresh_tokens'), refreshBefore);
    assert.equal(await count(p, 'hosts'), hostsBefore);

    // A token works once.
    const ok = await api('POST', '/v1/hosts/register', { body: good });
    assert.equal(ok.status, 201);
    assert.equal(ok.body.host.status, 'online');
    assert.ok(ok.body.token && ok.body.refresh_token);
    const again = await api('POST', '/v1/hosts/register', { body: good });
    assert.equal(again.status, 401);

    // Regenerating a token is for pending hosts only.
    const regen = await api('POST', `/v1/hosts/${created.body.host.id}/token`, { jwt: p.adminJwt });
    assert.equal(regen.status, 409);
    assert.match(regen.body.error.message, /online, not pending/);
    // Nothing runs there: delete it (the monitor would mark it unreachable otherwise).
    assert.equal((await api('DELETE', `/v1/hosts/${created.body.host.id}`, { jwt: p.adminJwt })).status, 204);
  });

  it('expires registration tokens after an hour and can issue a new one', async () => {
    const created = await api('POST', '/v1/hosts', { jwt: p.adminJwt, body: { type: 'regular' } });
    const id = created.body.host.id as string;
    // An hour passes (the clock is the database's, so move the token's expiry instead).
    await p.pg.query(`UPDATE host_tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL`);
    const body = {
      token: created.body.registration_token,
      address: '127.0.0.1:2',
      agent_token: randomBytes(32).toString('hex'),
    };
    assert.equal((await api('POST', '/v1/hosts/register', { body })).status, 401);
    const regen = await api('POST', `/v1/hosts/${id}/token`, { jwt: p.adminJwt });
    assert.equal(regen.status, 201);
    assert.notEqual(regen.body.registration_token, created.body.registration_token);
    assert.equal((await api('DELETE', `/v1/hosts/${id}`, { jwt: p.adminJwt })).status, 204);
  });

  it('checks heartbeat credentials', async () => {
    const agent = p.agents[0]!;
    const creds = credentials(agent.dataDir);
    const url = `/v1/hosts/${agent.hostId}/heartbeat`;
    assert.equal((await api('POST', url)).status, 401);
    assert.equal((await api('POST', url, { hostToken: 'nonsense' })).status, 401);
    assert.equal((await api('POST', url, { hostToken: p.adminJwt })).status, 401, 'a user JWT is not a host token');
    assert.equal((await api('POST', url, { hostToken: creds.token })).status, 204);
    const created = await api('POST', '/v1/hosts', { jwt: p.adminJwt, body: { type: 'regular' } });
    const otherHost = created.body.host.id as string;
    const r = await api('POST', `/v1/hosts/${otherHost}/heartbeat`, { hostToken: creds.token });
    assert.equal(r.status, 403);
    assert.equal((await api('POST', '/v1/hosts/host-zzz/heartbeat', { hostToken: creds.token })).status, 400);
    assert.equal((await api('DELETE', `/v1/hosts/${otherHost}`, { jwt: p.adminJwt })).status, 204);
  });

  it('rotates refresh tokens issue-then-revoke', async () => {
    const created = await api('POST', '/v1/hosts', { jwt: p.adminJwt, body: { type: 'regular' } });
    const reg = await api('POST', '/v1/hosts/register', {
      body: { token: created.body.registration_token, address: '127.0.0.1:3', agent_token: 'a'.repeat(40) },
    });
    const r1 = reg.body.refresh_token as string;
    const first = await api('POST', '/v1/hosts/auth/refresh', { body: { refresh_token: r1 } });
    assert.equal(first.status, 200);
    const r2 = first.body.refresh_token as string;
    assert.notEqual(r2, r1);
    // The answer was lost (a crash before saving r2): r1 still works.
    const retry = await api('POST', '/v1/hosts/auth/refresh', { body: { refresh_token: r1 } });
    assert.equal(retry.status, 200);
    const r3 = retry.body.refresh_token as string;
    // Using the newest token revokes every older one.
    assert.equal((await api('POST', '/v1/hosts/auth/refresh', { body: { refresh_token: r3 } })).status, 200);
    for (const old of [r1, r2]) {
      const r = await api('POST', '/v1/hosts/auth/refresh', { body: { refresh_token: old } });
      assert.equal(r.status, 401);
      assert.match(r.body.error.message, /invalid, expired or revoked refresh token/);
    }
    // The new JWT is a working host token.
    const hb = await api('POST', `/v1/hosts/${created.body.host.id}/heartbeat`, { hostToken: retry.body.token });
    assert.equal(hb.status, 204);
    assert.equal((await api('DELETE', `/v1/hosts/${created.body.host.id}`, { jwt: p.adminJwt })).status, 204);
  });

  it('keeps team hosts private and lets only admins create platform hosts', async () => {
    const denied = await api('POST', '/v1/hosts', { jwt: other.jwt, body: { type: 'regular' } });
    assert.equal(denied.status, 403);
    // Not a BYOC team yet.
    const notByoc = await api('POST', '/v1/hosts', { jwt: other.jwt, body: { type: 'byoc', team_id: other.teamId } });
    assert.equal(notByoc.status, 403);
    assert.equal(notByoc.body.error.code, 'byoc_disabled');
    // Someone else's team does not exist for this user.
    const foreign = await api('POST', '/v1/hosts', { jwt: other.jwt, body: { type: 'byoc', team_id: p.teamId } });
    assert.equal(foreign.status, 404);
    const missingTeam = await api('POST', '/v1/hosts', { jwt: other.jwt, body: { type: 'byoc' } });
    assert.equal(missingTeam.status, 400);
    const badType = await api('POST', '/v1/hosts', { jwt: other.jwt, body: { type: 'cloud' } });
    assert.equal(badType.status, 400);

    // Enabling BYOC is a platform admin's action: one-way, idempotent, admins only.
    const byocUrl = `/v1/admin/teams/${other.teamId}/byoc`;
    assert.equal((await api('PUT', byocUrl, { jwt: other.jwt, body: { enabled: true } })).status, 403);
    const off = await api('PUT', byocUrl, { jwt: p.adminJwt, body: { enabled: false } });
    assert.equal(off.status, 400);
    assert.match(off.body.error.message, /cannot be disabled/);
    const unknownTeam = await api('PUT', `/v1/admin/teams/team-${'0'.repeat(24)}1/byoc`, {
      jwt: p.adminJwt,
      body: { enabled: true },
    });
    assert.equal(unknownTeam.status, 404);
    for (let i = 0; i < 2; i++) {
      const on = await api('PUT', byocUrl, { jwt: p.adminJwt, body: { enabled: true } });
      assert.equal(on.status, 200, JSON.stringify(on.body));
      assert.deepEqual(on.body, { id: other.teamId, name: on.body.name, is_byoc: true });
    }
    const teams = await api('GET', '/v1/teams', { jwt: other.jwt });
    assert.equal(teams.body.find((t: { id: string }) => t.id === other.teamId).is_byoc, true);
    const byoc = await api('POST', '/v1/hosts', {
      jwt: other.jwt,
      body: { type: 'byoc', team_id: other.teamId, provider: 'hetzner', availability_zone: 'eu-central' },
    });
    assert.equal(byoc.status, 201);
    assert.equal(byoc.body.host.team_id, other.teamId);
    const id = byoc.body.host.id as string;

    const mine = await api('GET', '/v1/hosts', { jwt: other.jwt });
    assert.deepEqual(
      mine.body.map((h: { id: string }) => h.id),
      [id],
    );
    const all = await api('GET', '/v1/hosts', { jwt: p.adminJwt });
    assert.ok(all.body.some((h: { id: string }) => h.id === id) && all.body.length >= 2);
    // The platform host is invisible to the team: 404, not 403.
    assert.equal((await api('GET', `/v1/hosts/${p.agents[0]!.hostId}`, { jwt: other.jwt })).status, 404);
    assert.equal((await api('DELETE', `/v1/hosts/${p.agents[0]!.hostId}`, { jwt: other.jwt })).status, 404);
    assert.equal((await api('GET', `/v1/hosts/${p.agents[0]!.hostId}/tags`, { jwt: other.jwt })).status, 404);

    // Tags.
    assert.equal((await api('POST', `/v1/hosts/${id}/tags`, { jwt: other.jwt, body: { tag: 'gpu' } })).status, 204);
    assert.equal((await api('POST', `/v1/hosts/${id}/tags`, { jwt: other.jwt, body: { tag: 'gpu' } })).status, 204);
    assert.equal((await api('POST', `/v1/hosts/${id}/tags`, { jwt: other.jwt, body: { tag: 'ssd' } })).status, 204);
    const badTag = await api('POST', `/v1/hosts/${id}/tags`, { jwt: other.jwt, body: { tag: 'has space' } });
    assert.equal(badTag.status, 400);
    assert.deepEqual((await api('GET', `/v1/hosts/${id}/tags`, { jwt: other.jwt })).body, ['gpu', 'ssd']);
    assert.equal((await api('DELETE', `/v1/hosts/${id}/tags/gpu`, { jwt: other.jwt })).status, 204);
    assert.equal((await api('DELETE', `/v1/hosts/${id}/tags/gpu`, { jwt: other.jwt })).status, 404);
    assert.deepEqual((await api('GET', `/v1/hosts/${id}/tags`, { jwt: other.jwt })).body, ['ssd']);

    const preview = await api('GET', `/v1/hosts/${id}/delete-preview`, { jwt: other.jwt });
    assert.equal(preview.status, 200);
    assert.deepEqual(preview.body.sandbox_ids, []);
    assert.equal((await api('DELETE', `/v1/hosts/${id}`, { jwt: other.jwt })).status, 204);
    assert.equal((await api('GET', `/v1/hosts/${id}`, { jwt: other.jwt })).status, 404);

    // Every host action was audited for the team (audit writes never delay requests: wait for them).
    await waitFor('audit entries', async () => {
      const audit = await api('GET', '/v1/audit-logs?resource_type=host', { jwt: other.jwt });
      const actions = audit.body.items.map((e: { action: string }) => e.action).sort();
      return JSON.stringify(actions) === JSON.stringify(['create', 'delete']);
    });
  });

  it('marks a silent host unreachable and brings it back when it heartbeats again', async () => {
    const agent = p.agents[0]!;
    await agent.kill();
    await waitFor(
      'host unreachable',
      async () => (await api('GET', `/v1/hosts/${agent.hostId}`, { jwt: p.adminJwt })).body.status === 'unreachable',
      20_000,
    );
    // Restarted without a registration token: its saved credentials are enough.
    await agent.start();
    const r = await api('GET', `/v1/hosts/${agent.hostId}`, { jwt: p.adminJwt });
    assert.equal(r.body.status, 'online');
    // Platform hosts' events are admin-scoped platform events.
    await waitFor('marked_down and marked_up audit entries', async () => {
      const r = await p.pg.query(
        `SELECT action, scope FROM audit_logs WHERE resource_id = $1 AND action IN ('marked_down', 'marked_up')`,
        [agent.hostId],
      );
      return r.rows.length >= 2 && r.rows.every((row: { scope: string }) => row.scope === 'admin');
    });
  });

  it('refreshes its credentials when the control plane no longer accepts its token', async () => {
    const agent = p.agents[0]!;
    const before = credentials(agent.dataDir);
    // A new JWT secret invalidates every host JWT; refresh tokens live in the database.
    await p.restartControlPlane({ JWT_SECRET: randomBytes(32).toString('hex') });
    await waitFor('new credentials', async () => credentials(agent.dataDir).token !== before.token, 20_000);
    const after = credentials(agent.dataDir);
    assert.notEqual(after.refresh_token, before.refresh_token);
    assert.equal(after.agent_token, before.agent_token);
    const hb = await api('POST', `/v1/hosts/${agent.hostId}/heartbeat`, { hostToken: after.token });
    assert.equal(hb.status, 204);
    assert.ok(agent.running());
  });

  it('shuts a deleted host down and removes its credentials', async () => {
    const extra = await p.addAgent();
    const file = path.join(extra.dataDir, 'host-credentials.json');
    assert.ok(fs.existsSync(file));
    const del = await api('DELETE', `/v1/hosts/${extra.hostId}`, { jwt: p.adminJwt });
    assert.equal(del.status, 204);
    await waitFor('the deleted agent to exit', async () => !extra.running(), 20_000);
    assert.equal(fs.existsSync(file), false);
    assert.equal((await api('GET', `/v1/hosts/${extra.hostId}`, { jwt: p.adminJwt })).status, 404);
  });

  it('refuses bad ids and unknown hosts precisely', async () => {
    assert.equal((await api('GET', '/v1/hosts/nope', { jwt: p.adminJwt })).status, 400);
    const unknown = `host-${'0'.repeat(25)}`;
    assert.equal((await api('GET', `/v1/hosts/${unknown}`, { jwt: p.adminJwt })).status, 404);
    assert.equal((await api('DELETE', `/v1/hosts/${unknown}`, { jwt: p.adminJwt })).status, 404);
    assert.equal((await api('GET', '/v1/hosts')).status, 401);
    const bad = await api('POST', '/v1/hosts', { jwt: p.adminJwt, body: { type: 'regular', provider: '<script>' } });
    assert.equal(bad.status, 400);
  });
});
