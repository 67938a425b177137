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
    log.info(
      {
        url,
        database: database.kind,
        redis: Boolean(redis),
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
          await monitor.stop();
          await capsuleStats.stop();
          await app.close();
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
