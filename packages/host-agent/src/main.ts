// The host agent: `node packages/host-agent/dist/src/main.js [--register <token> --address <ip:port>]` (as root).
//
// With --register (first start), the agent registers with the control plane at
// WRENN_CP_URL and keeps its credentials in its data directory; later starts
// need no token. Registered agents heartbeat to the control plane.
//
// Start: load config → stage the envd bundle → recover capsules a previous
// run left (re-adopted into the manager; traces of dead ones removed) →
// start the TTL reaper and metrics sampler → serve Connect RPC.
//
// SIGTERM / SIGINT: stop accepting, end open streams, stop the timers and
// exit, leaving every capsule RUNNING (or paused) — the next start re-adopts
// them. The Terminate RPC instead destroys every capsule, then exits.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { ConfigError, loadConfig, parseListenAddr, type AgentConfig } from './config.js';
import {
  Heartbeat,
  RegistrationError,
  credentialsPath,
  loadCredentials,
  newAgentToken,
  register,
  type HostCredentials,
} from './control-plane.js';
import { Layout } from './layout.js';
import { SandboxManager } from './manager.js';
import { AgentServer } from './rpc.js';
import { ContainerRuntime } from './runtime/container.js';

function die(message: string): never {
  process.stderr.write(`wrenn host agent: ${message}\n`);
  process.exit(1);
}

function parseCommandLine(): { registerToken: string | null; address: string | null } {
  let values;
  try {
    ({ values } = parseArgs({
      options: { register: { type: 'string' }, address: { type: 'string' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    die(`${(err as Error).message}; usage: main.js [--register <token> --address <ip:port>]`);
  }
  const registerToken = values.register ?? null;
  const address = values.address ?? null;
  if (registerToken !== null && address === null)
    die('--register needs --address <ip:port> (where the control plane reaches this agent)');
  if (registerToken === '') die('--register needs the registration token from POST /v1/hosts');
  if (address !== null) {
    try {
      const { host, port } = parseListenAddr(address);
      if (port === 0 || host === '0.0.0.0') throw new ConfigError('');
    } catch {
      die(`--address must be a reachable ip:port with a non-zero port, got "${address}"`);
    }
  }
  return { registerToken, address };
}

async function main(): Promise<void> {
  const args = parseCommandLine();
  let config: AgentConfig;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) die(err.message);
    throw err;
  }
  if (args.registerToken !== null && config.cpUrl === null)
    die('--register needs WRENN_CP_URL (the control plane URL)');
  let creds: HostCredentials | null = null;
  try {
    creds = args.registerToken === null ? loadCredentials(config.dataDir) : null;
  } catch (err) {
    die((err as Error).message);
  }
  // The control plane knows the token saved at registration; a new registration gets a new one.
  const agentToken = creds?.agent_token ?? config.agentToken ?? (args.registerToken !== null ? newAgentToken() : null);
  const log = pino({ level: config.logLevel, base: { svc: 'host-agent' } });
  // A stray rejection in one request must not take down the agent of every capsule on the host.
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception; exiting (capsules keep running and are re-adopted at the next start)');
    process.exit(70);
  });
  const layout = new Layout(config.dataDir);
  const runtime = new ContainerRuntime({ layout, netPrefix: config.netPrefix, subnet: config.subnet, log });

  await runtime.stageEnvd();
  const recovered = await runtime.recover();
  const manager = new SandboxManager({ runtime, layout, log });
  for (const rc of recovered) await manager.adopt(rc);
  await manager.pruneMeta();
  await manager.sweepTemplates();
  manager.start();

  const shutdown = new AbortController();
  let stopping = false;
  const server = new AgentServer({
    manager,
    log,
    token: agentToken,
    dataDir: config.dataDir,
    shutdownSignal: shutdown.signal,
    onTerminate: () => {
      if (stopping) return;
      stopping = true;
      log.info({}, 'terminate requested: destroying every capsule');
      // The host is being retired (deleted by the control plane): its credentials are dead too.
      fs.rmSync(credentialsPath(config.dataDir), { force: true });
      void (async () => {
        await manager.reaper.stop();
        const failed = await manager.destroyAll();
        if (failed.length) log.error({ failed }, 'some capsules could not be destroyed cleanly');
        // The agent is being retired: its firewall chains go too (unless capsules remain).
        else await runtime.removeHostSetup().catch((err) => log.error({ err }, 'removing network rules failed'));
        shutdown.abort();
        await manager.stop();
        await server.close();
        process.exit(failed.length ? 1 : 0);
      })();
    },
  });
  const addr = await server.listen(config.listenPort, config.listenHost);
  log.info(
    { host: addr.address, port: addr.port, capsules: recovered.length, auth: agentToken !== null },
    'host agent listening',
  );

  if (args.registerToken !== null) {
    fs.mkdirSync(config.dataDir, { recursive: true });
    try {
      creds = await register({
        cpUrl: config.cpUrl!,
        token: args.registerToken,
        address: args.address!,
        agentToken: agentToken!,
        dataDir: config.dataDir,
      });
    } catch (err) {
      if (!(err instanceof RegistrationError)) throw err;
      await Promise.all([server.close(), manager.stop()]);
      // A first start that failed leaves no firewall chains behind.
      if (manager.counts().running + manager.counts().paused === 0) await runtime.removeHostSetup().catch(() => {});
      die(err.message);
    }
    log.info({ hostId: creds.host_id, cp: creds.cp_url }, 'registered with the control plane');
  }
  let heartbeat: Heartbeat | null = null;
  if (creds) {
    heartbeat = new Heartbeat({
      dataDir: config.dataDir,
      creds: config.cpUrl ? { ...creds, cp_url: config.cpUrl } : creds,
      intervalMs: config.heartbeatIntervalMs,
      log,
      onCutOff: async () => {
        for (const c of manager.list().capsules) {
          if (c.state === 'running') await manager.pause(c.id).catch(() => {});
        }
      },
      onDeleted: () => stop('host deleted'),
    });
    heartbeat.start();
  }

  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    if (config.destroyOnExit) {
      log.info({ signal }, 'stopping; destroying every capsule (WRENN_DESTROY_ON_EXIT)');
      void (async () => {
        await heartbeat?.stop();
        await manager.reaper.stop();
        const failed = await manager.destroyAll();
        if (!failed.length) await runtime.removeHostSetup().catch((err) => log.error({ err }, 'removing rules failed'));
        shutdown.abort();
        await Promise.all([server.close(), manager.stop()]);
        process.exit(failed.length ? 1 : 0);
      })();
      return;
    }
    log.info({ signal }, 'stopping; capsules keep running and are re-adopted at the next start');
    shutdown.abort();
    void Promise.all([server.close(), manager.stop(), heartbeat?.stop()]).finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`wrenn host agent: failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
