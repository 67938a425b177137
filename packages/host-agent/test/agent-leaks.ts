// Asserts that an agent (network prefix, data directory) left nothing on the
// host: no capsule network namespace or veth, mount, loop device, cgroup,
// runc container, sandbox directory or capsule process.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return '';
  }
}

/**
 * `retired`: the agent was terminated, so even its own firewall chains
 * (kept while it may restart and re-adopt capsules) must be gone.
 */
export async function findLeaks(prefix: string, dataDir: string, opts: { retired?: boolean } = {}): Promise<string[]> {
  const leaks: string[] = [];
  const root = fs.realpathSync(dataDir);
  for (const line of run('ip', ['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0] ?? '';
    if (name.startsWith(`${prefix}-ns-`)) leaks.push(`netns ${name}`);
  }
  for (const line of run('ip', ['-o', 'link', 'show']).split('\n')) {
    const m = /^\d+:\s+([^:@]+)/.exec(line);
    if (m && new RegExp(`^${prefix}-v\\d+$`).test(m[1]!)) leaks.push(`link ${m[1]}`);
  }
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mountPoint = line.split(' ')[4];
    if (mountPoint && (mountPoint === root || mountPoint.startsWith(root + '/'))) leaks.push(`mount ${mountPoint}`);
  }
  for (const line of run('losetup', ['-a']).split('\n')) {
    if (line.includes(root + '/')) leaks.push(`loop ${line.trim()}`);
  }
  for (const controller of fs.readdirSync('/sys/fs/cgroup')) {
    const parent = path.join('/sys/fs/cgroup', controller, `wrenn-${prefix}`);
    let children: fs.Dirent[] = [];
    try {
      children = fs.readdirSync(parent, { withFileTypes: true }).filter((d) => d.isDirectory());
    } catch {
      continue;
    }
    for (const d of children) leaks.push(`cgroup ${path.join(parent, d.name)}`);
    // A retired agent removes its (empty) parent cgroups too.
    if (opts.retired && children.length === 0) leaks.push(`cgroup parent ${parent}`);
  }
  const runcRoot = path.join(root, 'runc');
  if (fs.existsSync(runcRoot)) {
    const out = run('runc', ['--root', runcRoot, 'list', '-q']).trim();
    if (out) leaks.push(...out.split('\n').map((id) => `runc container ${id}`));
  }
  // A retired agent leaves no spare disk images behind either.
  const spares = path.join(root, 'cache', 'disks', 'spare');
  if (opts.retired && fs.existsSync(spares)) {
    for (const name of fs.readdirSync(spares)) leaks.push(`spare disk ${name}`);
  }
  const sandboxes = path.join(root, 'sandboxes');
  if (fs.existsSync(sandboxes)) {
    for (const name of fs.readdirSync(sandboxes)) leaks.push(`sandbox dir ${name}`);
  }
  const cgroupMark = `/wrenn-${prefix}/`;
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').includes(cgroupMark)) leaks.push(`process ${pid}`);
    } catch {
      // gone meanwhile
    }
  }
  for (const table of ['filter', 'nat']) {
    for (const line of run('iptables-save', ['-t', table]).split('\n')) {
      if (new RegExp(`${prefix}-v\\d+\\b`).test(line)) leaks.push(`iptables ${table}: ${line}`);
      else if (opts.retired && line.includes(`WRENN-${prefix.toUpperCase()}-`))
        leaks.push(`iptables ${table}: ${line}`);
    }
  }
  return leaks;
}

/** Polls briefly (teardown of a killed process tree is asynchronous), then asserts nothing is left. */
export async function assertNoLeaks(prefix: string, dataDir: string, opts: { retired?: boolean } = {}): Promise<void> {
  let leaks: string[] = [];
  for (let i = 0; i < 20; i++) {
    leaks = await findLeaks(prefix, dataDir, opts);
    if (leaks.length === 0) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.deepEqual(leaks, [], `host resources left behind by agent "${prefix}"`);
}
