#!/usr/bin/env node
// Host agent benchmark, through its Connect RPC only (real agent, runtime,
// capsules, envd). Run as root after `npm run build` and setup:
//   node bench/agent-bench.mjs            (AGENT_BENCH_CAP=<n> caps the capacity run, default 150)
// Prints: create→envd-ready p50/p95 (50 sequential creates), exec `true`
// round trip p50/p95, pause and resume p50, host memory per idle capsule,
// and how many idle capsules the machine held before the first failure.
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { startAgent, newCapsuleId, removeDataDir } from '../packages/host-agent/dist/test/agent-harness.js';
import { EnvdClient } from '../packages/host-agent/dist/src/envd-client.js';
import { fmt, pct } from './lib.mjs';

const CREATES = Number(process.env.AGENT_BENCH_CREATES ?? 50);
const EXECS = Number(process.env.AGENT_BENCH_EXECS ?? 300);
const CYCLES = Number(process.env.AGENT_BENCH_CYCLES ?? 30);
const IDLE = Number(process.env.AGENT_BENCH_IDLE ?? 20);
const CAP = Number(process.env.AGENT_BENCH_CAP ?? 150);
const MIN_AVAILABLE = 4 * 1024 ** 3;

const memAvailable = () => {
  const m = /MemAvailable:\s+(\d+) kB/.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return Number(m[1]) * 1024;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function timed(fn) {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

// A closed stdout (e.g. piped into `head`) must not kill the script before it cleans up.
process.stdout.on('error', () => {});

const agent = await startAgent({ prefix: 'hbn', subnet: '10.240.0.0/16' });
const c = agent.client;
let stopping = false;
void agent.exited.then((code) => {
  if (!stopping)
    console.error(`host agent exited unexpectedly (${code}); its log ends with:\n${agent.output().slice(-4000)}`);
});
const live = new Set();
const results = {};
try {
  // 1. Sequential creates: the RPC returns once envd answers /health (and /init when defaults are given).
  const creates = [];
  const destroys = [];
  for (let i = 0; i < CREATES; i++) {
    const id = newCapsuleId();
    creates.push(
      await timed(() => c.createSandbox({ sandboxId: id, template: 'minimal', memoryMb: 256, diskSizeMb: 1024 })),
    );
    live.add(id);
    destroys.push(await timed(() => c.destroySandbox({ sandboxId: id })));
    live.delete(id);
  }
  results.create = { p50: pct(creates, 50), p95: pct(creates, 95), n: CREATES };
  // Where the time goes: the agent logs runtime.create and envd start-up per capsule.
  const steps = agent
    .output()
    .split('\n')
    .filter((l) => l.includes('"msg":"capsule created"'))
    .map((l) => JSON.parse(l).ms);
  results.createSteps = {
    runtime: pct(
      steps.map((s) => s.runtime),
      50,
    ),
    envd: pct(
      steps.map((s) => s.envd),
      50,
    ),
  };
  results.destroy = { p50: pct(destroys, 50), p95: pct(destroys, 95) };
  console.log(
    `create → envd ready: p50 ${fmt(results.create.p50)}, p95 ${fmt(results.create.p95)} (${CREATES} sequential; target p50 ≤ 150 ms)`,
  );
  console.log(
    `  of which runtime.create p50 ${fmt(results.createSteps.runtime)}, envd start → /health p50 ${fmt(results.createSteps.envd)}`,
  );
  console.log(`destroy: p50 ${fmt(results.destroy.p50)}, p95 ${fmt(results.destroy.p95)}`);

  // 2. Exec round trip and 3. pause/resume, on one capsule.
  const id = newCapsuleId();
  const { hostIp } = await c.createSandbox({ sandboxId: id, template: 'minimal' });
  live.add(id);
  for (let i = 0; i < 20; i++) await c.exec({ sandboxId: id, cmd: 'true' }); // warm up
  const execs = [];
  for (let i = 0; i < EXECS; i++) execs.push(await timed(() => c.exec({ sandboxId: id, cmd: 'true' })));
  results.exec = { p50: pct(execs, 50), p95: pct(execs, 95), n: EXECS };
  // The same command straight to the capsule's envd, to separate the agent's share.
  const envd = new EnvdClient(hostIp);
  const direct = [];
  for (let i = 0; i < EXECS; i++) {
    direct.push(
      await timed(async () => {
        for await (const _ of envd.process.start({ process: { cmd: 'true', args: [], envs: {} }, stdin: false }));
      }),
    );
  }
  envd.close();
  results.execDirect = { p50: pct(direct, 50), p95: pct(direct, 95) };
  console.log(
    `exec \`true\` round trip: p50 ${fmt(results.exec.p50)}, p95 ${fmt(results.exec.p95)} (${EXECS} runs; target p50 ≤ 10 ms)`,
  );

  const pauses = [];
  const resumes = [];
  for (let i = 0; i < CYCLES; i++) {
    pauses.push(await timed(() => c.pauseSandbox({ sandboxId: id })));
    resumes.push(await timed(() => c.resumeSandbox({ sandboxId: id, timeoutSec: 0 })));
  }
  results.pause = { p50: pct(pauses, 50), p95: pct(pauses, 95) };
  results.resume = { p50: pct(resumes, 50), p95: pct(resumes, 95) };
  console.log(
    `  the same straight to envd (no agent): p50 ${fmt(results.execDirect.p50)}, p95 ${fmt(results.execDirect.p95)}`,
  );
  console.log(`pause: p50 ${fmt(results.pause.p50)}; resume: p50 ${fmt(results.resume.p50)} (${CYCLES} cycles)`);
  await c.destroySandbox({ sandboxId: id });
  live.delete(id);

  // 4. Host memory per idle capsule: MemAvailable delta, and the capsules' own (cgroup) memory.
  await sleep(1000);
  const before = memAvailable();
  const idle = [];
  for (let i = 0; i < IDLE; i++) {
    const x = newCapsuleId();
    await c.createSandbox({ sandboxId: x, template: 'minimal', memoryMb: 256, diskSizeMb: 1024 });
    live.add(x);
    idle.push(x);
  }
  await sleep(3000);
  const afterMem = memAvailable();
  let cgroupBytes = 0;
  for (const x of idle) {
    const pts = (await c.getSandboxMetrics({ sandboxId: x, range: '5m' })).points;
    cgroupBytes += Number(pts.at(-1)?.memBytes ?? 0n);
  }
  results.memPerCapsuleMiB = (before - afterMem) / IDLE / 1024 ** 2;
  results.cgroupPerCapsuleMiB = cgroupBytes / IDLE / 1024 ** 2;
  console.log(
    `host memory per idle capsule: ${results.memPerCapsuleMiB.toFixed(1)} MiB (MemAvailable delta over ${IDLE}); ` +
      `capsule's own memory ${results.cgroupPerCapsuleMiB.toFixed(1)} MiB (cgroup); target ≤ 60 MiB`,
  );

  // 5. Capacity: keep creating idle capsules until the first failure, the cap, or MemAvailable < 4 GiB.
  let held = live.size;
  let stop = `cap of ${CAP} reached`;
  const t0 = performance.now();
  while (held < CAP) {
    if (memAvailable() < MIN_AVAILABLE) {
      stop = 'MemAvailable below 4 GiB';
      break;
    }
    const x = newCapsuleId();
    try {
      await c.createSandbox({ sandboxId: x, template: 'minimal', memoryMb: 128, diskSizeMb: 256 });
      live.add(x);
      held++;
    } catch (err) {
      stop = `first failure: ${err.message}`;
      break;
    }
  }
  results.capacity = { held, stop, seconds: (performance.now() - t0) / 1000 };
  console.log(
    `idle capsules held: ${held} (${stop}); MemAvailable then ${(memAvailable() / 1024 ** 3).toFixed(1)} GiB`,
  );
} finally {
  const t = performance.now();
  const queue = [...live];
  const n = queue.length;
  // A few at a time: the runtime's iptables/mount work is serialised by the kernel anyway.
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let x = queue.pop(); x; x = queue.pop()) {
        await c.destroySandbox({ sandboxId: x }).catch((e) => console.error(x, e.message));
        live.delete(x);
      }
    }),
  );
  console.log(`cleaned up ${n} capsules in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  stopping = true;
  await agent.terminate();
  removeDataDir(agent.dataDir);
}
console.log(JSON.stringify(results));
