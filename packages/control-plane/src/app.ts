// Wires a configuration into a running control plane: database, migrations,
// optional Redis, HTTP server. main.ts and the benchmark use it.
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { openDatabase, type Database } from './db/connect.js';
import { migrate } from './db/migrate.js';
import { openRedis, type RedisHandle } from './redis.js';
import { buildServer, type App } from './server.js';
import { HostMonitor } from './hosts/monitor.js';
import { CapsuleStatsSampler } from './capsules/stats.js';
import { CapsuleService } from './capsules/service.js';
import { MemoryBuildQueue, RedisBuildQueue, type BuildQueue } from './builds/queue.js';
import { BuildRunner } from './builds/runner.js';

export interface RunningControlPlane {
  app: App;
  database: Database;
  redis?: RedisHandle;
  /** The address actually bound (port 0 picks a free one). */
  url: string;
  /** Stops accepting, finishes in-flight requests, flushes, closes Redis and the database. */
  close(): Promise<void>;
}

export async function openConfiguredDatabase(config: Config, log: Logger): Promise<Database> {
  return openDatabase({ databaseUrl: config.databaseUrl, pgliteDir: config.pgliteDir, log });
}

export async function startControlPlane(config: Config, log: Logger): Promise<RunningControlPlane> {
  const database = await openConfiguredDatabase(config, log);
  let redis: RedisHandle | undefined;
  try {
    const applied = await migrate(database.pool);
    if (applied.length > 0) log.info({ applied }, 'database migrations applied');
    if (config.redisUrl) redis = await openRedis(config.redisUrl, log);
    // With Redis, builds queued by any control plane go to any control plane's workers.
    const buildQueue: BuildQueue = redis ? new RedisBuildQueue(redis.client, log) : new MemoryBuildQueue();
    const app = await buildServer({
      db: database.db,
      log,
      jwtSecret: config.jwtSecret,
      version: config.version,
      publicUrl: config.publicUrl,
      oauthRedirectUrl: config.oauthRedirectUrl,
      github: config.github,
      revocationBus: redis?.revocationBus,
      pty: config.pty,
      buildQueue,
    });
    const url = await app.listen({ host: config.listenHost, port: config.listenPort });
    const monitor = new HostMonitor({
      db: database.db,
      pool: app.wrenn.hosts,
      audit: app.wrenn.audit,
      log,
      intervalMs: config.hostMonitorIntervalMs,
      heartbeatTimeoutMs: config.hostHeartbeatTimeoutMs,
    });
    monitor.start();
    const capsuleStats = new CapsuleStatsSampler(database.db, log);
    capsuleStats.start();
    const w = app.wrenn;
    const builds = new BuildRunner({
      db: database.db,
      hosts: w.hosts,
      capsules: new CapsuleService({ db: database.db, hosts: w.hosts, audit: w.audit, scheduler: w.scheduler, log }),
      queue: buildQueue,
      log,
      leaseMs: config.buildLeaseMs,
    });
    try {
      await builds.start(config.buildWorkers);
    } catch (err) {
      await builds.stop();
      await Promise.allSettled([monitor.stop(), capsuleStats.stop(), app.close(), buildQueue.close()]);
      throw err;
    }
    log.info(
      {
        url,
        database: database.kind,
        redis: Boolean(redis),
        buildWorkers: config.buildWorkers,
        oauth: app.wrenn.oauth.names(),
        jwtSecret: config.jwtSecretSource,
      },
      'control plane listening',
    );
    let closing: Promise<void> | undefined;
    return {
      app,
      database,
      redis,
      url,
      close() {
        closing ??= (async () => {
          // Running builds are aborted at once; their cleanup (capsule destroyed, row marked failed) goes on
          // while the HTTP server stops accepting and finishes its requests, and ends before the database closes.
          const buildsStopped = builds.stop();
          await monitor.stop();
          await capsuleStats.stop();
          await app.close();
          await buildsStopped;
          await app.wrenn.audit.drain();
          await buildQueue.close();
          await redis?.close();
          await database.close();
        })();
        return closing;
      },
    };
  } catch (err) {
    await redis?.close().catch(() => {});
    await database.close().catch(() => {});
    throw err;
  }
}
