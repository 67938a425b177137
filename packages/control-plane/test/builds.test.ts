// Template builds end to end: a real control plane (with Redis, then without),
// a real host agent and real build capsules, driven through /v1/admin/builds.
// A recipe using every instruction becomes a platform template whose capsules
// have the files, the default user and env, and the START process running;
// failures, cancels and shutdowns leave no capsule behind.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { buffer } from 'node:stream/consumers';
import tar from 'tar-stream';
import yazl from 'yazl';
import { parseId } from '@wrenn/contracts';
import { startPlatform, waitFor, type Platform, type TeamCredentials } from '@wrenn/testkit';
import { api, type Resp } from './capsules-helpers.js';
import { REDIS_URL, spawnControlPlane } from './helpers.js';

type TarEntry = {
  name: string;
  type?: 'file' | 'directory' | 'symlink';
  linkname?: string;
  data?: string;
  mode?: number;
};

async function tarOf(entries: TarEntry[]): Promise<Buffer> {
  const p = tar.pack();
  const out = buffer(p);
  for (const e of entries) {
    if ((e.type ?? 'file') === 'file') p.entry({ name: e.name, mode: e.mode ?? 0o644 }, e.data ?? '');
    else p.entry({ name: e.name, type: e.type, linkname: e.linkname, mode: 0o755 });
  }
  p.finalize();
  return out;
}

async function zipOf(files: Record<string, { data: string; mode?: number }>): Promise<Buffer> {
  const z = new yazl.ZipFile();
  for (const [name, f] of Object.entries(files)) z.addBuffer(Buffer.from(f.data), name, { mode: f.mode ?? 0o100644 });
  z.end();
  return buffer(z.outputStream);
}

describe('template builds', () => {
  let p: Platform;
  let admin: ReturnType<typeof api>;
  let call: ReturnType<typeof api>;
  let user: TeamCredentials;

  const ok = (r: Resp, status: number) => assert.equal(r.status, status, JSON.stringify(r.body));
  const errorOf = (r: Resp, status: number, re?: RegExp) => {
    ok(r, status);
    if (re) assert.match(r.body.error.message, re);
  };
  const buildCount = async () => Number((await p.pg.query('SELECT count(*) AS n FROM template_builds')).rows[0].n);

  /** POST /v1/admin/builds as JSON, or as multipart when an archive is given. */
  const submit = async (config: object, archive?: Buffer, jwt = p.adminJwt): Promise<Resp> => {
    if (!archive) return admin('POST', '/v1/admin/builds', config, { jwt });
    const form = new FormData();
    form.append('config', JSON.stringify(config));
    form.append('archive', new Blob([archive]), 'files');
    const res = await fetch(`${p.baseUrl}/v1/admin/builds`, {
      method: 'POST',
      headers: { authorization: `Bearer ${jwt}` },
      body: form,
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
  };
  const build = async (config: object, archive?: Buffer) => {
    const r = await submit(config, archive);
    ok(r, 201);
    return r.body as { id: string; status: string };
  };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const waitBuild = async (id: string, statuses = ['success', 'failed', 'cancelled']): Promise<any> =>
    waitFor(
      `build ${id} to be ${statuses.join('/')}`,
      async () => {
        const r = await admin('GET', `/v1/admin/builds/${id}`);
        ok(r, 200);
        return statuses.includes(r.body.status) ? r.body : null;
      },
      10 * 60_000,
    );
  /** The build capsule is gone: its row stopped and its directory removed from the host. */
  const assertNoCapsuleLeft = async (b: { sandbox_id?: string }) => {
    assert.ok(b.sandbox_id, 'the build had a capsule');
    const uuid = parseId('capsule', b.sandbox_id);
    await waitFor('the build capsule to be destroyed', async () => {
      const row = (await p.pg.query('SELECT status FROM sandboxes WHERE id = $1', [uuid])).rows[0];
      const dir = path.join(p.agents[0]!.dataDir, 'sandboxes', b.sandbox_id!);
      return row?.status === 'stopped' && !fs.existsSync(dir);
    });
    const live = await p.pg.query(
      "SELECT id FROM sandboxes WHERE team_id = '00000000-0000-0000-0000-000000000000' AND status <> 'stopped'",
    );
    assert.deepEqual(live.rows, [], 'no platform capsule is left running');
  };
  const templateRow = async (name: string) =>
    (
      await p.pg.query("SELECT * FROM templates WHERE team_id = '00000000-0000-0000-0000-000000000000' AND name = $1", [
        name,
      ])
    ).rows[0];
  const newCapsule = async (template: string) => {
    const r = await call('POST', '/v1/capsules', { template });
    ok(r, 201);
    return r.body.id as string;
  };
  const exec = async (cid: string, script: string, user?: string) => {
    const r = await call('POST', `/v1/capsules/${cid}/exec`, { cmd: '/bin/sh', args: ['-c', script], user });
    ok(r, 200);
    return r.body as { stdout: string; stderr: string; exit_code: number };
  };

  before(async () => {
    p = await startPlatform({
      prefix: 'bld',
      subnetBase: '10.237',
      // A short lease, so the crash test does not wait a minute for it to run out.
      cpEnv: { REDIS_URL, WRENN_BUILD_WORKERS: '2', WRENN_BUILD_LEASE_SEC: '4' },
    });
    admin = api(p.baseUrl, { jwt: p.adminJwt });
    call = api(p.baseUrl, { apiKey: p.apiKey });
    user = await p.newTeam();
  });

  after(async () => {
    await p?.stop();
  });

  it('uses the Redis queue when REDIS_URL is set', () => {
    assert.match(p.cpLogs(), /"redis":true,"buildWorkers":2/);
  });

  it('refuses bad requests with a precise 4xx and creates nothing', async () => {
    const goodTar = await tarOf([{ name: 'a.txt', data: 'a' }]);
    errorOf(
      await submit({ name: 'bad1', recipe: ['RUN true', 'FROM debian'] }),
      400,
      /^recipe line 2: unknown instruction "FROM"/,
    );
    errorOf(await submit({ name: 'bad1', recipe: ['ENV 9X=1'] }), 400, /^recipe line 1: /);
    errorOf(await submit({ name: 'bad1', recipe: [] }), 400, /recipe/);
    errorOf(await submit({ name: 'bad/1', recipe: ['RUN true'] }), 400, /name/);
    errorOf(await submit({ name: 'bad1', recipe: ['RUN true'], extra: 1 }), 400, /extra/);
    errorOf(await submit({ name: 'bad1', recipe: ['RUN true'], healthcheck: '--interval=1s' }), 400, /^healthcheck: /);
    // Traversal in a COPY source, and in an archive entry.
    errorOf(
      await submit({ name: 'bad1', recipe: ['COPY ../../etc/shadow /x'] }, goodTar),
      400,
      /^recipe line 1: COPY source/,
    );
    errorOf(
      await submit({ name: 'bad1', recipe: ['COPY a.txt /x'] }, await tarOf([{ name: '../a.txt', data: 'x' }])),
      400,
      /archive entry "\.\.\/a\.txt"/,
    );
    errorOf(
      await submit(
        { name: 'bad1', recipe: ['COPY l /x'] },
        await tarOf([{ name: 'l', type: 'symlink', linkname: '../../etc/passwd' }]),
      ),
      400,
      /symlink pointing outside/,
    );
    errorOf(
      await submit({ name: 'bad1', recipe: ['COPY a.txt /x'] }, Buffer.from('plain text')),
      400,
      /tar, tar.gz or zip/,
    );
    errorOf(
      await submit({ name: 'bad1', recipe: ['COPY a.txt /x'] }),
      400,
      /^recipe line 1: COPY needs an uploaded archive/,
    );
    errorOf(
      await submit({ name: 'bad1', recipe: ['COPY b.txt /x'] }, goodTar),
      400,
      /COPY source "b.txt" is not in the archive/,
    );
    errorOf(await submit({ name: 'bad1', recipe: ['RUN true'], base_template: 'nope' }), 400, /base_template/);
    errorOf(await submit({ name: 'minimal', recipe: ['RUN true'] }), 409, /already exists/);
    // Platform admins only.
    errorOf(await submit({ name: 'bad1', recipe: ['RUN true'] }, undefined, user.jwt), 403);
    errorOf(await admin('GET', '/v1/admin/builds', undefined, { jwt: user.jwt }), 403);
    errorOf(await admin('GET', '/v1/admin/builds', undefined, { apiKey: p.apiKey }), 401);
    errorOf(await admin('POST', '/v1/admin/builds', { name: 'x', recipe: ['RUN true'] }, {}), 401);
    errorOf(await admin('GET', '/v1/admin/builds/bld-nope'), 400);
    errorOf(await admin('GET', '/v1/admin/builds/bld-0000000000000000000000000'), 404);
    assert.equal(await buildCount(), 0);
  });

  it('builds a template with every instruction; its capsules have the files, the user, the env and START', async () => {
    const archive = await tarOf([
      { name: 'site/', type: 'directory' },
      { name: 'site/index.html', data: '<h1>built by wrenn</h1>\n' },
      { name: 'site/sub/page.txt', data: 'page\n' },
      { name: 'tools/hello.sh', data: '#!/bin/sh\necho "hello from $1"\n', mode: 0o755 },
    ]);
    const b = await build(
      {
        name: 'web-built',
        vcpus: 1,
        memory_mb: 768,
        recipe: [
          'ENV GREETING=hello',
          'env MSG=${GREETING}, $USER! costs $$5 $NOPE.',
          'WORKDIR notes',
          'RUN echo "$MSG" > msg.txt && whoami > whoami.txt && pwd > pwd.txt',
          'USER builder',
          'WORKDIR /srv/www',
          'COPY site/ .',
          'COPY tools/hello.sh /usr/local/bin/hello',
          'RUN --timeout=20s test "$(whoami)" = builder && test "$HOME" = /home/builder && hello "$GREETING" > hi.txt',
          'START python3 -m http.server 8000',
        ],
        healthcheck:
          '--interval=1s --timeout=5s --retries=30 python3 -c "import urllib.request as u; u.urlopen(\'http://127.0.0.1:8000/index.html\')"',
      },
      archive,
    );
    const done = await waitBuild(b.id);
    assert.equal(done.status, 'success', JSON.stringify({ error: done.error, logs: done.logs }, null, 1));
    assert.equal(done.default_user, 'builder');
    assert.deepEqual(done.default_env, { GREETING: 'hello', MSG: 'hello, wrenn-user! costs $5 .' });
    // Pre-build (3) + recipe (10) + post-build (3), then the healthcheck's entry.
    assert.equal(done.total_steps, 16);
    assert.deepEqual(
      done.logs.map((l: { phase: string }) => l.phase),
      [...Array(3).fill('pre-build'), ...Array(10).fill('recipe'), ...Array(3).fill('post-build'), 'healthcheck'],
    );
    assert.ok(done.logs.every((l: { ok: boolean; exit: number }) => l.ok && l.exit === 0));
    assert.equal(done.logs[0].cmd, 'RUN apt-get update');
    assert.match(done.logs[3].stdout, /^GREETING=hello$/);
    assert.ok(done.started_at && done.completed_at);
    console.log(
      `build with pre/post and healthcheck: ${Date.parse(done.completed_at) - Date.parse(done.started_at)} ms`,
    );
    await assertNoCapsuleLeft(done);

    const t = await templateRow('web-built');
    assert.equal(t.type, 'snapshot');
    assert.equal(t.vcpus, 1);
    assert.equal(t.memory_mb, 768);
    assert.equal(t.default_user, 'builder');
    assert.equal(t.host_id, parseId('host', done.host_id));
    assert.ok(Number(t.size_bytes) > 10 * 1024 * 1024, `size ${t.size_bytes}`);
    assert.deepEqual(
      t.start_commands.map((s: { cmd: string; user: string; cwd: string }) => [s.cmd, s.user, s.cwd]),
      [['python3 -m http.server 8000', 'builder', '/srv/www']],
    );

    const cid = await newCapsule('web-built');
    const who = await exec(cid, 'whoami; echo "$GREETING|$MSG"');
    assert.equal(who.stdout, 'builder\nhello|hello, wrenn-user! costs $5 .\n');
    const files = await exec(
      cid,
      'cat /home/wrenn-user/notes/msg.txt /home/wrenn-user/notes/whoami.txt /home/wrenn-user/notes/pwd.txt /srv/www/hi.txt; ' +
        'stat -c "%U %n" /srv/www/index.html /srv/www/sub/page.txt /usr/local/bin/hello /usr/local/bin /home/wrenn-user/notes/msg.txt; ' +
        'ls -d /tmp/build-files* 2>/dev/null | wc -l; ls /var/lib/apt/lists 2>/dev/null | wc -l',
      'root', // wrenn-user's home is not readable by builder
    );
    assert.equal(
      files.stdout,
      'hello, wrenn-user! costs $5 .\nwrenn-user\n/home/wrenn-user/notes\nhello from hello\n' +
        'builder /srv/www/index.html\nbuilder /srv/www/sub/page.txt\nbuilder /usr/local/bin/hello\nroot /usr/local/bin\n' +
        'wrenn-user /home/wrenn-user/notes/msg.txt\n0\n0\n',
    );
    // START: the server runs again in the new capsule (nothing of the build's process survived).
    const page = await waitFor('the START process to answer', async () => {
      const r = await exec(cid, 'curl -sf http://127.0.0.1:8000/index.html');
      return r.exit_code === 0 ? r.stdout : null;
    });
    assert.equal(page, '<h1>built by wrenn</h1>\n');
    const ps = await exec(cid, 'ps -o user=,args= -C python3');
    assert.match(ps.stdout, /^builder\s+python3 -m http\.server 8000$/m);
    ok(await call('DELETE', `/v1/capsules/${cid}`), 204);
  });

  it('runs two builds at once (tar.gz and zip archives), each a base template', async () => {
    const tgz = gzipSync(await tarOf([{ name: 'conf/settings.ini', data: 'mode=fast\n' }]));
    const zip = await zipOf({ 'bin/tool.sh': { data: '#!/bin/sh\necho tool "$@"\n', mode: 0o100755 } });
    const a = await build(
      {
        name: 'from-tgz',
        skip_pre_post: true,
        recipe: ['COPY conf /etc/myconf', 'RUN sleep 2 && test -f /etc/myconf/settings.ini'],
      },
      tgz,
    );
    const b = await build(
      {
        name: 'from-zip',
        skip_pre_post: true,
        recipe: ['USER zed', 'WORKDIR /home/zed', 'COPY bin/tool.sh bin/', 'RUN sleep 2 && bin/tool.sh ran > out.txt'],
      },
      zip,
    );
    const [da, db] = await Promise.all([waitBuild(a.id), waitBuild(b.id)]);
    for (const d of [da, db]) {
      assert.equal(d.status, 'success', JSON.stringify({ error: d.error, logs: d.logs }));
      console.log(
        `build ${d.name} (skip_pre_post, no healthcheck): ${Date.parse(d.completed_at) - Date.parse(d.started_at)} ms`,
      );
    }
    // Both ran at the same time: each started before the other finished.
    assert.ok(
      Date.parse(da.started_at) < Date.parse(db.completed_at) &&
        Date.parse(db.started_at) < Date.parse(da.completed_at),
    );
    assert.equal((await templateRow('from-tgz')).type, 'base');
    assert.equal((await templateRow('from-zip')).default_user, 'zed');
    await assertNoCapsuleLeft(da);
    await assertNoCapsuleLeft(db);

    const c1 = await newCapsule('from-tgz');
    assert.equal(
      (await exec(c1, 'whoami; cat /etc/myconf/settings.ini; stat -c %U /etc/myconf/settings.ini')).stdout,
      'root\nmode=fast\nroot\n',
    );
    const c2 = await newCapsule('from-zip');
    assert.equal(
      (await exec(c2, 'whoami; pwd; cat out.txt; stat -c "%U %a" bin/tool.sh')).stdout,
      'zed\n/home/zed\ntool ran\nzed 755\n',
    );
    for (const c of [c1, c2]) ok(await call('DELETE', `/v1/capsules/${c}`), 204);

    // The name is now a platform template's.
    errorOf(await submit({ name: 'from-zip', recipe: ['RUN true'] }), 409);
  });

  it('a failing RUN step fails the build, names the step, saves nothing and leaves no capsule', async () => {
    const b = await build({
      name: 'fails',
      skip_pre_post: true,
      recipe: ['RUN echo before', '# comment', 'RUN echo oops >&2; exit 3', 'RUN echo never'],
    });
    const d = await waitBuild(b.id);
    assert.equal(d.status, 'failed');
    assert.equal(d.error, 'recipe step 2 (line 3: RUN echo oops >&2; exit 3) failed: exit code 3: oops');
    assert.equal(d.logs.length, 2);
    assert.deepEqual([d.logs[1].ok, d.logs[1].exit, d.logs[1].stderr], [false, 3, 'oops\n']);
    assert.equal(d.current_step, 2);
    assert.ok(d.completed_at);
    assert.equal(await templateRow('fails'), undefined);
    await assertNoCapsuleLeft(d);
  });

  it('a RUN step over its timeout is killed and fails the build', async () => {
    const b = await build({ name: 'slow', skip_pre_post: true, recipe: ['RUN --timeout=1s sleep 30'] });
    const d = await waitBuild(b.id);
    assert.equal(d.status, 'failed');
    assert.equal(d.error, 'recipe step 1 (line 1: RUN --timeout=1s sleep 30) failed: timed out after 1 s');
    assert.equal(d.logs[0].ok, false);
    await assertNoCapsuleLeft(d);
  });

  it('a healthcheck that never passes fails the build', async () => {
    const b = await build({
      name: 'unhealthy',
      skip_pre_post: true,
      recipe: ['RUN true'],
      healthcheck: '--interval=1s --timeout=2s --retries=2 sh -c "echo down >&2; exit 1"',
    });
    const d = await waitBuild(b.id);
    assert.equal(d.status, 'failed');
    assert.match(d.error, /^healthcheck failed: not healthy after 2 tries \(last: exit code 1: down\)$/);
    assert.equal(d.logs.at(-1).phase, 'healthcheck');
    assert.equal(await templateRow('unhealthy'), undefined);
    await assertNoCapsuleLeft(d);
  });

  it('cancels a running build: the step is stopped and the capsule destroyed; a finished build is 400', async () => {
    const b = await build({ name: 'long', skip_pre_post: true, recipe: ['RUN --timeout=5m sleep 300'] });
    await waitFor('the build to run its step', async () => {
      const r = await admin('GET', `/v1/admin/builds/${b.id}`);
      return r.body.status === 'running' && r.body.current_step === 1 && r.body.sandbox_id;
    });
    // One live build per name.
    errorOf(
      await submit({ name: 'long', skip_pre_post: true, recipe: ['RUN true'] }),
      409,
      /already pending or running/,
    );
    const r = await admin('POST', `/v1/admin/builds/${b.id}/cancel`);
    ok(r, 200);
    assert.equal(r.body.status, 'cancelled');
    assert.ok(r.body.completed_at);
    const d = await waitBuild(b.id);
    await assertNoCapsuleLeft(d);
    const after = await admin('GET', `/v1/admin/builds/${b.id}`);
    assert.equal(after.body.status, 'cancelled');
    errorOf(await admin('POST', `/v1/admin/builds/${b.id}/cancel`), 400, /already cancelled/);
    assert.equal(await templateRow('long'), undefined);
    const list = await admin('GET', '/v1/admin/builds?status=cancelled');
    ok(list, 200);
    assert.deepEqual(
      list.body.map((x: { id: string }) => x.id),
      [b.id],
    );
  });

  it('control planes share the Redis queue: one without workers submits and cancels, the other runs the build', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wrenn-bld-cp2-'));
    const cp2 = await spawnControlPlane({
      DATABASE_URL: p.databaseUrl,
      REDIS_URL,
      WRENN_DATA_DIR: dataDir,
      WRENN_BUILD_WORKERS: '0',
      WRENN_HOST_MONITOR_INTERVAL_SEC: '1',
    });
    try {
      const login = await api(cp2.url, {})('POST', '/v1/auth/login', {
        email: p.adminEmail,
        password: p.adminPassword,
      });
      ok(login, 200);
      const admin2 = api(cp2.url, { jwt: login.body.token });
      const r = await admin2('POST', '/v1/admin/builds', {
        name: 'via-cp2',
        skip_pre_post: true,
        recipe: ['RUN --timeout=5m sleep 300'],
      });
      ok(r, 201);
      // Only the first control plane has workers: it took the build from Redis.
      await waitFor('the build to run its step', async () => {
        const g = await admin2('GET', `/v1/admin/builds/${r.body.id}`);
        return g.body.status === 'running' && g.body.current_step === 1;
      });
      const c = await admin2('POST', `/v1/admin/builds/${r.body.id}/cancel`);
      ok(c, 200);
      assert.equal(c.body.status, 'cancelled');
      await assertNoCapsuleLeft(await waitBuild(r.body.id));
      assert.equal((await admin('GET', `/v1/admin/builds/${r.body.id}`)).body.status, 'cancelled');
    } finally {
      cp2.proc.kill('SIGTERM');
      await cp2.exited;
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('a shutdown fails the running build cleanly; without Redis the in-process queue runs builds', async () => {
    const b = await build({ name: 'interrupted', skip_pre_post: true, recipe: ['RUN --timeout=5m sleep 300'] });
    await waitFor('the build to run its step', async () => {
      const r = await admin('GET', `/v1/admin/builds/${b.id}`);
      return r.body.status === 'running' && r.body.current_step === 1;
    });
    await p.restartControlPlane({ REDIS_URL: '' });
    admin = api(p.baseUrl, { jwt: p.adminJwt });
    const d = (await admin('GET', `/v1/admin/builds/${b.id}`)).body;
    assert.equal(d.status, 'failed');
    assert.equal(d.error, 'the control plane shut down during the build');
    await assertNoCapsuleLeft(d);
    assert.match(p.cpLogs(), /"redis":false,"buildWorkers":2/);

    const n = await build({ name: 'no-redis', skip_pre_post: true, recipe: ['ENV A=1', 'RUN test "$A" = 1'] });
    const dn = await waitBuild(n.id);
    assert.equal(dn.status, 'success', dn.error);
    await assertNoCapsuleLeft(dn);
  });

  it('a build left running by a crashed control plane is failed and its capsule destroyed', async () => {
    const b = await build({ name: 'crashed', skip_pre_post: true, recipe: ['RUN --timeout=5m sleep 300'] });
    await waitFor('the build to run its step', async () => {
      const r = await admin('GET', `/v1/admin/builds/${b.id}`);
      return r.body.status === 'running' && r.body.current_step === 1;
    });
    await p.restartControlPlane({}, { crash: true });
    admin = api(p.baseUrl, { jwt: p.adminJwt });
    const d = await waitBuild(b.id);
    assert.equal(d.status, 'failed');
    assert.equal(d.error, 'the control plane running this build stopped before it finished');
    assert.ok(d.completed_at);
    await assertNoCapsuleLeft(d);
  });

  it('records build creates and cancels in the audit log', async () => {
    const rows = await waitFor('audit entries', async () => {
      const r = await p.pg.query(
        "SELECT action, scope, resource_id FROM audit_logs WHERE resource_type = 'build' ORDER BY created_at",
      );
      return r.rows.filter((x) => x.action === 'cancel').length >= 2 ? r.rows : null;
    });
    assert.ok(rows.every((x) => x.scope === 'admin' && /^bld-/.test(x.resource_id)));
    assert.equal(rows.filter((x) => x.action === 'cancel').length, 2);
    assert.ok(rows.filter((x) => x.action === 'create').length >= 8);
  });
});
