// The host agent: `node packages/host-agent/dist/src/main.js` (as root).
//
// Start: load config → stage the envd bundle → recover capsules a previous
// run left (re-adopted into the manager; traces of dead ones removed) →
// start the TTL reaper and metrics sampler → serve Connect RPC.
//
// SIGTERM / SIGINT: stop accepting, end open streams, stop the timers and
// exit, leaving every capsule RUNNING (or paused) — the next start re-adopts
// them. The Terminate RPC instead destroys every capsule, then exits.
import pino from 'pino';
import { ConfigError, loadConfig, type AgentConfig } from './config.js';
import { Layout } from './layout.js';
import { SandboxManager } from './manager.js';
import { AgentServer } from './rpc.js';
import { ContainerRuntime } from './runtime/container.js';

async function main(): Promise<void> {
  let config: AgentConfig;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`wrenn host agent: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
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
  manager.start();

  const shutdown = new AbortController();
  let stopping = false;
  const server = new AgentServer({
    manager,
    log,
    token: config.agentToken,
    dataDir: config.dataDir,
    shutdownSignal: shutdown.signal,
    onTerminate: () => {
      if (stopping) return;
      stopping = true;
      log.info({}, 'terminate requested: destroying every capsule');
      void (async () => {
        await manager.reaper.stop();
        const failed = await manager.destroyAll();
        if (failed.length) log.error({ failed }, 'some capsules could not be destroyed cleanly');
        // The agent is being retired: its firewall chains go too (unless capsules remain).
        else await runtime.net.removeHostSetup().catch((err) => log.error({ err }, 'removing network rules failed'));
        shutdown.abort();
        await manager.stop();
        await server.close();
        process.exit(failed.length ? 1 : 0);
      })();
    },
  });
  const addr = await server.listen(config.listenPort, config.listenHost);
  log.info(
    { host: addr.address, port: addr.port, capsules: recovered.length, auth: config.agentToken !== null },
    'host agent listening',
  );

  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping; capsules keep running and are re-adopted at the next start');
    shutdown.abort();
    void Promise.all([server.close(), manager.stop()]).finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`wrenn host agent: failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
