#!/usr/bin/env node
// wrenn control plane. Commands:
//   serve (default)   run the HTTP API
//   migrate           apply database migrations and exit
//   bootstrap-admin   --email E --password P [--name N] [--api-key-out FILE]
//                     create the first platform admin when there are no users yet
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { formatId } from '@wrenn/contracts';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './logging.js';
import { migrate } from './db/migrate.js';
import { openConfiguredDatabase, startControlPlane } from './app.js';
import { ensureBootstrapAdmin } from './bootstrap.js';

const SHUTDOWN_TIMEOUT_MS = 30_000;

/** Startup failures: one line on stderr, exit code 1, no stack trace. */
function die(message: string): never {
  process.stderr.write(`wrenn-control-plane: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  process.exit(1);
}

async function serve(): Promise<void> {
  const config = loadConfig();
  const dest = pino.destination({ fd: 1, sync: false });
  const log = createLogger(config.logLevel, dest);
  const cp = await startControlPlane(config, log);

  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down: finishing in-flight requests');
    const timer = setTimeout(() => {
      log.error('shutdown timed out; exiting');
      dest.flushSync();
      process.exit(1);
    }, SHUTDOWN_TIMEOUT_MS);
    timer.unref();
    cp.close().then(
      () => {
        log.info('control plane stopped');
        dest.flushSync();
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'error during shutdown');
        dest.flushSync();
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function migrateCommand(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
  const database = await openConfiguredDatabase(config, log);
  try {
    const applied = await migrate(database.pool);
    process.stdout.write(applied.length ? `applied migrations: ${applied.join(', ')}\n` : 'database is up to date\n');
  } finally {
    await database.close();
  }
}

async function bootstrapAdminCommand(args: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        email: { type: 'string' },
        password: { type: 'string' },
        name: { type: 'string' },
        'api-key-out': { type: 'string' },
      },
      strict: true,
    }));
  } catch (err) {
    die((err as Error).message);
  }
  // The password may come from the environment instead, keeping it out of `ps`.
  const password = values.password ?? process.env.WRENN_ADMIN_PASSWORD;
  if (!values.email || !password) die('bootstrap-admin needs --email and --password (or WRENN_ADMIN_PASSWORD)');

  const config = loadConfig();
  const log = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
  const database = await openConfiguredDatabase(config, log);
  try {
    await migrate(database.pool);
    const result = await ensureBootstrapAdmin(database.db, { email: values.email, password, name: values.name });
    const out: Record<string, unknown> = {
      created: result.created,
      user_id: formatId('user', result.userId),
      team_id: formatId('team', result.teamId),
    };
    if (result.apiKey) {
      if (values['api-key-out']) {
        writeFileSync(values['api-key-out'], result.apiKey + '\n', { mode: 0o600, flag: 'w' });
        out.api_key_file = values['api-key-out'];
      } else {
        out.api_key = result.apiKey;
      }
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    await database.close();
  }
}

async function main(): Promise<void> {
  const [command = 'serve', ...rest] = process.argv.slice(2);
  switch (command) {
    case 'serve':
      if (rest.length) die(`serve takes no arguments (configuration comes from the environment)`);
      return serve();
    case 'migrate':
      return migrateCommand();
    case 'bootstrap-admin':
      return bootstrapAdminCommand(rest);
    default:
      die(`unknown command "${command}"; use serve, migrate or bootstrap-admin`);
  }
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) die(`configuration error: ${err.message}`);
  die(err instanceof Error ? err.message : String(err));
});
