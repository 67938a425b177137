// envd entry point: `envd [--host 0.0.0.0] [--port 49983] [--keepalive-ms 30000]`.
// Prints "envd listening on <port>" once it accepts requests (--port 0 picks a
// free port, which tests read from that line).
import { parseArgs } from 'node:util';
import { installLightHeaders } from './headers.js';
import { startEnvd } from './server.js';

// Before anything uses Headers: Node's own costs ~40 ms to load (see headers.ts).
installLightHeaders();

export const DEFAULT_PORT = 49983;

function usage(message: string): never {
  process.stderr.write(`envd: ${message}\nusage: envd [--host ADDR] [--port N] [--keepalive-ms MS]\n`);
  process.exit(2);
}

function intOption(value: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) usage(`--${name} must be an integer from ${min} to ${max}`);
  return n;
}

let values: { host?: string; port?: string; 'keepalive-ms'?: string };
try {
  ({ values } = parseArgs({
    options: { host: { type: 'string' }, port: { type: 'string' }, 'keepalive-ms': { type: 'string' } },
    strict: true,
  }));
} catch (err) {
  usage((err as Error).message);
}

const server = await startEnvd({
  host: values.host ?? '0.0.0.0',
  port: intOption(values.port, 'port', DEFAULT_PORT, 0, 65535),
  keepaliveMs: intOption(values['keepalive-ms'], 'keepalive-ms', 30_000, 10, 3_600_000),
  // The host agent describes the capsule in WRENN_* variables (WRENN_SANDBOX, WRENN_SANDBOX_ID, ...):
  // every process sees them, as in the original envd.
  envVars: Object.fromEntries(
    Object.entries(process.env).filter((e): e is [string, string] => e[0].startsWith('WRENN_') && e[1] !== undefined),
  ),
});
process.stdout.write(`envd listening on ${server.port}\n`);

// envd is the capsule's main process: if it died, the capsule would stop. A
// bug in one request must not do that, so the last resort logs and goes on.
process.on('uncaughtException', (err) => process.stderr.write(`envd: uncaught exception: ${err.stack ?? err}\n`));
process.on('unhandledRejection', (err) => process.stderr.write(`envd: unhandled rejection: ${String(err)}\n`));

const shutdown = () => {
  void server.close().finally(() => process.exit(0));
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
