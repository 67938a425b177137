// Capsules across hosts, end to end through the public API: two host agents on
// one machine (separate data directories and address ranges), scheduling
// across them, a host killed while it runs capsules and brought back, a
// control plane restart, and deleting a host that still runs capsules.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startPlatform, waitFor, type Platform } from '@wrenn/testkit';
import { api } from './capsules-helpers.js';
import { openDatabase } from '../src/db/connect.js';
import { createLogger } from '../src/logging.js';
import { AuditLogger } from '../src/audit/logger.js';
import { HostClientPool } from '../src/hosts/pool.js';
import { HostMonitor } from '../src/hosts/monitor.js';

describe('capsules on several hosts', () => {
  let p: Platform;
  const hostOf = new Map<string, string>(); // capsule id -> host id

  // The admin team's API key, or a session JWT when given (host routes).
  const call = (method: string, url: string, body?: unknown, jwt?: string) =>
    api(p.baseUrl, { apiKey: p.apiKey })(method, url, body, jwt ? { jwt } : null);
  const exec = (id: string, cmd: string, args: string[] = []) => call('POST', `/v1/capsules/${id}/exec`, { cmd, args });
  const status = async (id: string) => (await call('GET', `/v1/capsules/${id}`)).body.status as string;
  const hostIdOfCapsule = async (id: string): Promise<string> => {
    const r = await p.pg.query(`SELECT host_id FROM sandboxes WHERE id = $1`, [await uuidOf(id)]);
    return r.rows[0].host_id as string;
  };
  const uuidOf = async (id: string): Promise<string> => {
    const { parseId } = await import('@wrenn/contracts');
    return parseId('capsule', id);
  };
  const hostUuid = async (hostId: string): Promise<string> => {
    const { parseId } = await import('@wrenn/contracts');
    return parseId('host', hostId);
  };

  before(async () => {
    p = await startPlatform({
      prefix: 'mh',
      subnetBase: '10.247',
      agents: 2,
      cpEnv: { WRENN_HOST_HEARTBEAT_TIMEOUT_SEC: '4', WRENN_HOST_MONITOR_INTERVAL_SEC: '0.5' },
      agentEnv: { WRENN_HEARTBEAT_INTERVAL_SEC: '1' },
    });
  });

  after(async () => {
    await p?.stop();
  });

  it('spreads capsules over both hosts and runs them on either', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await call('POST', '/v1/capsules', { template: 'minimal', memory_mb: 256 });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.status, 'running');
      ids.push(r.body.id);
    }
    const hosts = new Set<string>();
    for (const id of ids) {
      const h = await hostIdOfCapsule(id);
      hostOf.set(id, h);
      hosts.add(h);
      const r = await exec(id, 'hostname');
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.exit_code, 0);
    }
    assert.equal(hosts.size, 2, 'least-loaded placement uses both hosts');
    const expected = new Set(await Promise.all(p.agents.map((a) => hostUuid(a.hostId))));
    assert.deepEqual(hosts, expected);
  });

  it('heals a missing capsule once, however many control planes reconcile at the same time', async () => {
    const [id] = [...hostOf.keys()];
    const uuid = await uuidOf(id!);
    // Three monitors race: the control plane's own and two more over the same database.
    const database = await openDatabase({ databaseUrl: p.databaseUrl });
    const log = createLogger('silent');
    const audit = new AuditLogger(database.db, log);
    const pool = new HostClientPool();
    const monitors = [1, 2].map(() => new HostMonitor({ db: database.db, pool, audit, log }));
    try {
      const since = new Date();
      // As if its host had missed its heartbeats for a while and come back.
      await p.pg.query(`UPDATE sandboxes SET status = 'missing' WHERE id = $1`, [uuid]);
      await Promise.all(monitors.map((m) => m.runOnce()));
      await audit.drain();
      await waitFor('the capsule to be running', async () => (await status(id!)) === 'running');
      await new Promise((r) => setTimeout(r, 1500)); // the control plane's own pass, and its audit write
      const healed = await p.pg.query(
        `SELECT count(*)::int AS n FROM audit_logs WHERE resource_id = $1 AND action = 'running' AND created_at >= $2`,
        [id, since],
      );
      assert.equal(healed.rows[0].n, 1, 'exactly one monitor made (and logged) the change');
    } finally {
      await database.close();
    }
  });

  it('survives a killed host: 503 while it is down, missing after its heartbeats stop, healed when it returns', async () => {
    const agent = p.agents[0]!;
    const hostUuid0 = await hostUuid(agent.hostId);
    const onHost = [...hostOf.entries()].filter(([, h]) => h === hostUuid0).map(([id]) => id);
    const elsewhere = [...hostOf.entries()].filter(([, h]) => h !== hostUuid0).map(([id]) => id);
    assert.ok(onHost.length > 0 && elsewhere.length > 0);
    const victim = onHost[0]!;
    const w = await exec(victim, 'sh', ['-c', 'echo kept > /tmp/state']);
    assert.equal(w.body.exit_code, 0);

    const since = new Date();
    await agent.kill();
    // The request reaches a dead host: a clear 5xx, not a hang or a 500.
    const during = await exec(victim, 'true');
    assert.ok(during.status === 502 || during.status === 503, JSON.stringify(during));
    assert.match(during.body.error.message, /host/i);
    // The other host is unaffected.
    assert.equal((await exec(elsewhere[0]!, 'true')).body.exit_code, 0);

    await waitFor('capsules on the dead host to be missing', async () => (await status(victim)) === 'missing', 20_000);
    const host = await call('GET', `/v1/hosts/${agent.hostId}`, undefined, p.adminJwt);
    assert.equal(host.body.status, 'unreachable');
    assert.equal(await status(elsewhere[0]!), 'running');
    // New capsules go to the host that is up.
    const fresh = await call('POST', '/v1/capsules', { template: 'minimal', memory_mb: 256 });
    assert.equal(fresh.status, 201);
    assert.notEqual(await hostIdOfCapsule(fresh.body.id), hostUuid0);
    hostOf.set(fresh.body.id, await hostIdOfCapsule(fresh.body.id));

    // The agent comes back (its capsules kept running meanwhile): the monitor heals their state.
    await agent.start();
    await waitFor('the capsule to be running again', async () => (await status(victim)) === 'running', 20_000);
    const r = await exec(victim, 'cat', ['/tmp/state']);
    assert.equal(r.status, 200);
    assert.equal(r.body.stdout, 'kept\n');
    const audit = await p.pg.query(
      `SELECT metadata->>'to' AS "to" FROM audit_logs
        WHERE resource_id = $1 AND action IN ('missing', 'running') AND created_at >= $2`,
      [victim, since],
    );
    assert.deepEqual(audit.rows.map((row: { to: string }) => row.to).sort(), ['missing', 'running']);
  });

  it('loses no capsule when the control plane restarts', async () => {
    const before = (await call('GET', '/v1/capsules')).body as { id: string; status: string }[];
    assert.ok(before.length >= 5);
    await p.restartControlPlane();
    const afterList = (await call('GET', '/v1/capsules')).body as { id: string; status: string }[];
    assert.deepEqual(afterList.map((c) => [c.id, c.status]).sort(), before.map((c) => [c.id, c.status]).sort());
    for (const c of afterList) assert.equal((await exec(c.id, 'true')).body.exit_code, 0, c.id);
  });

  it('refuses to delete a host with capsules unless forced, then stops them', async () => {
    const agent = p.agents[1]!;
    const hostUuid1 = await hostUuid(agent.hostId);
    const onHost = [...hostOf.entries()].filter(([, h]) => h === hostUuid1).map(([id]) => id);
    assert.ok(onHost.length > 0);
    const preview = await call('GET', `/v1/hosts/${agent.hostId}/delete-preview`, undefined, p.adminJwt);
    assert.deepEqual([...preview.body.sandbox_ids].sort(), [...onHost].sort());
    const refused = await call('DELETE', `/v1/hosts/${agent.hostId}`, undefined, p.adminJwt);
    assert.equal(refused.status, 409);
    assert.equal(refused.body.error.code, 'host_has_sandboxes');
    assert.deepEqual([...refused.body.error.sandbox_ids].sort(), [...onHost].sort());
    assert.equal(await status(onHost[0]!), 'running', 'a refused delete changes nothing');

    const forced = await call('DELETE', `/v1/hosts/${agent.hostId}?force=true`, undefined, p.adminJwt);
    assert.equal(forced.status, 204);
    for (const id of onHost) assert.equal(await status(id), 'stopped');
    await waitFor('the retired agent to exit', async () => !agent.running(), 30_000);
    // Its capsules are really gone from the machine.
    const r = await exec(onHost[0]!, 'true');
    assert.equal(r.status, 409);
  });

  it('pauses every capsule of a host whose credentials can no longer be refreshed', async () => {
    const agent = p.agents[0]!;
    const creds = JSON.parse(fs.readFileSync(path.join(agent.dataDir, 'host-credentials.json'), 'utf8')) as {
      agent_token: string;
    };
    const listOnAgent = async () => {
      // Straight to the agent (Connect's JSON protocol): the control plane no longer hears from it.
      const res = await fetch(`http://${agent.address}/hostagent.v1.HostAgentService/ListSandboxes`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${creds.agent_token}` },
        body: '{}',
      });
      return ((await res.json()) as { sandboxes?: { sandboxId: string; status: string }[] }).sandboxes ?? [];
    };
    const before = await listOnAgent();
    assert.ok(before.some((c) => c.status === 'running'));
    // Its refresh tokens expire (60 days offline, say) and every host JWT becomes invalid.
    await p.pg.query(`UPDATE host_refresh_tokens SET expires_at = now() - interval '1 second'`);
    await p.restartControlPlane({ JWT_SECRET: 'rotated-secret-' + 'x'.repeat(40) });
    await waitFor(
      'the agent to pause its capsules',
      async () => {
        const now = await listOnAgent();
        return now.length === before.length && now.every((c) => c.status === 'paused');
      },
      20_000,
    );
    assert.match(agent.output(), /host credentials were revoked: pausing every capsule/);
    await waitFor(
      'the host to be unreachable',
      async () => (await call('GET', `/v1/hosts/${agent.hostId}`, undefined, p.adminJwt)).body.status === 'unreachable',
      20_000,
    );
  });
});
