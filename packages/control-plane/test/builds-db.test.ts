// The builds' SQL on both databases (real PostgreSQL and embedded PGlite, as
// `npm start` uses): submission with an archive, one live build per name,
// claims through the in-process queue, cancel, and the sweep of builds whose
// lease ran out. No capsules here: builds.test.ts runs real builds.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { buffer } from 'node:stream/consumers';
import pino from 'pino';
import tar from 'tar-stream';
import { formatId } from '@wrenn/contracts';
import { AuditLogger, SYSTEM_ACTOR } from '../src/audit/logger.js';
import { BuildService } from '../src/builds/service.js';
import { MemoryBuildQueue } from '../src/builds/queue.js';
import { BuildRunner } from '../src/builds/runner.js';
import { CapsuleService } from '../src/capsules/service.js';
import { HostClientPool } from '../src/hosts/pool.js';
import { LeastLoadedScheduler } from '../src/hosts/scheduler.js';
import { ApiError } from '../src/errors.js';
import { openTestDatabase, type DbKind } from './helpers.js';

async function tarOf(files: Record<string, string>): Promise<Buffer> {
  const p = tar.pack();
  const out = buffer(p);
  for (const [name, data] of Object.entries(files)) p.entry({ name }, data);
  p.finalize();
  return out;
}

const isApiError = (status: number, re: RegExp) => (e: unknown) =>
  e instanceof ApiError && e.status === status && re.test(e.message);

for (const kind of ['postgres', 'pglite'] as DbKind[]) {
  describe(`builds on ${kind}`, () => {
    test('submit, claim, cancel and sweep', async () => {
      const { database, cleanup } = await openTestDatabase(kind);
      const log = pino({ level: 'silent' });
      const db = database.db;
      const audit = new AuditLogger(db, log);
      const queue = new MemoryBuildQueue();
      const svc = new BuildService({ db, audit, queue, log });
      try {
        const body = svc.parseConfig({
          name: 'db-test',
          recipe: ['COPY a.txt /a.txt', 'RUN true'],
          skip_pre_post: true,
        });
        const row = await svc.submit(SYSTEM_ACTOR, body, await tarOf({ 'a.txt': 'a' }));
        assert.equal(row.status, 'pending');
        assert.equal(row.total_steps, 2);
        assert.deepEqual(row.recipe, ['COPY a.txt /a.txt', 'RUN true']);
        const archive = await db.selectFrom('template_build_archives').selectAll().executeTakeFirstOrThrow();
        assert.equal(archive.build_id, row.id);
        assert.ok((archive.data as unknown) instanceof Uint8Array, 'bytea comes back as bytes');
        assert.ok(archive.data.length >= 1024, 'a re-packed tar');

        await assert.rejects(
          svc.submit(SYSTEM_ACTOR, body, await tarOf({ 'a.txt': 'a' })),
          isApiError(409, /already pending/),
        );
        assert.throws(() => svc.parseConfig({ name: 'x', recipe: [] }), isApiError(400, /^body\.recipe /));

        // The queue hands the id to a consumer; an aborted wait returns null without leaving a timer.
        const consumer = queue.consumer();
        assert.equal(await consumer.pop(new AbortController().signal), row.id);
        const ac = new AbortController();
        const waiting = consumer.pop(ac.signal);
        ac.abort();
        assert.equal(await waiting, null);

        const cancelled = await svc.cancel(SYSTEM_ACTOR, formatId('build', row.id));
        assert.equal(cancelled.status, 'cancelled');
        assert.ok(cancelled.completed_at);
        assert.equal((await db.selectFrom('template_build_archives').selectAll().execute()).length, 0);
        await assert.rejects(svc.cancel(SYSTEM_ACTOR, formatId('build', row.id)), isApiError(400, /already cancelled/));
        // The name is free again once the build is over.
        const again = await svc.submit(SYSTEM_ACTOR, svc.parseConfig({ name: 'db-test', recipe: ['RUN true'] }), null);
        assert.equal(again.total_steps, 7);
        assert.equal((await svc.list({ status: 'cancelled' })).length, 1);
        assert.equal((await svc.list({})).length, 2);

        // A running build whose lease ran out is failed by the sweep; one with a live lease is not.
        const hosts = new HostClientPool();
        const runner = new BuildRunner({
          db,
          hosts,
          queue,
          log,
          capsules: new CapsuleService({ db, hosts, audit, scheduler: new LeastLoadedScheduler(db), log }),
        });
        const past = new Date(Date.now() - 1000);
        const future = new Date(Date.now() + 60_000);
        const [dead, live] = await Promise.all(
          [past, future].map((lease, i) =>
            db
              .insertInto('template_builds')
              .values({
                name: `lease-${i}`,
                recipe: '["RUN true"]',
                logs: '[]',
                default_env: '{}',
                metadata: '{}',
                status: 'running',
                lease_expires_at: lease,
              })
              .returning('id')
              .executeTakeFirstOrThrow(),
          ),
        );
        await runner.sweep();
        const status = async (id: string) =>
          await db
            .selectFrom('template_builds')
            .select(['status', 'error', 'completed_at'])
            .where('id', '=', id)
            .executeTakeFirstOrThrow();
        const d = await status(dead!.id);
        assert.equal(d.status, 'failed');
        assert.match(d.error, /stopped before it finished/);
        assert.ok(d.completed_at);
        assert.equal((await status(live!.id)).status, 'running');
        await audit.drain();
      } finally {
        await cleanup();
      }
    });
  });
}
