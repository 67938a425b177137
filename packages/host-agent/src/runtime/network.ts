// Networking for capsules: one network namespace per capsule, joined to the
// host by a veth pair, a /30 per capsule carved from the agent's subnet, NAT
// for outbound traffic, and firewall rules that keep capsules away from the
// host's own services and from each other.
//
// Addressing: slot n (1..N) owns the n-th /30 of the subnet; its first usable
// address is the host side of the veth (`<prefix>-v<n>`), the second is the
// capsule's eth0 (the capsule's host-reachable address).
//
// Firewall: every rule lives in chains named after the agent's prefix, jumped
// to once from INPUT, FORWARD and nat POSTROUTING, so two agents on one host
// never touch each other's rules and cleanup is exact. The rules match the
// veth name pattern `<prefix>-v+` rather than one veth each: a veth is covered
// from the moment it exists, and creating or destroying a capsule needs no
// iptables call at all (nothing per capsule to leak or to re-insert).
import fs from 'node:fs/promises';
import { run, runStatus } from './exec.js';

export const ENVD_PORT = 49983;

export class NetworkError extends Error {
  override name = 'NetworkError';
}

export interface Subnet {
  /** Network address as a 32-bit number. */
  base: number;
  bits: number;
  cidr: string;
}

export function ipToNum(ip: string): number {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new NetworkError(`not an IPv4 address: ${ip}`);
  }
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function numToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function parseSubnet(cidr: string): Subnet {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(cidr);
  if (!m) throw new NetworkError(`subnet must be an IPv4 CIDR like 10.20.0.0/16, got "${cidr}"`);
  const bits = Number(m[2]);
  if (bits < 8 || bits > 28) throw new NetworkError(`subnet prefix length must be 8..28, got /${bits}`);
  const base = ipToNum(m[1]!);
  const mask = (0xffffffff << (32 - bits)) >>> 0;
  if ((base & ~mask) >>> 0 !== 0) throw new NetworkError(`subnet "${cidr}" has host bits set`);
  return { base, bits, cidr };
}

/** Number of capsule slots in a subnet: every /30 but the first (it holds the network address). */
export function slotCount(subnet: Subnet): number {
  return 2 ** (32 - subnet.bits) / 4 - 1;
}

export interface SlotAddresses {
  /** Host side of the veth. */
  gatewayIp: string;
  /** The capsule's eth0: the address the host reaches it on. */
  capsuleIp: string;
}

export function slotAddresses(subnet: Subnet, slot: number): SlotAddresses {
  if (!Number.isInteger(slot) || slot < 1 || slot > slotCount(subnet)) {
    throw new NetworkError(`slot ${slot} is outside 1..${slotCount(subnet)} of ${subnet.cidr}`);
  }
  const block = subnet.base + slot * 4;
  return { gatewayIp: numToIp(block + 1), capsuleIp: numToIp(block + 2) };
}

/** Lowest-free allocator of slot indexes 1..size. */
export class SlotAllocator {
  private readonly used = new Set<number>();
  constructor(readonly size: number) {}

  allocate(): number {
    for (let i = 1; i <= this.size; i++) {
      if (!this.used.has(i)) {
        this.used.add(i);
        return i;
      }
    }
    throw new NetworkError(`all ${this.size} network slots are in use`);
  }
  /** Marks a slot taken (a capsule re-adopted after a restart); false when already taken. */
  reserve(slot: number): boolean {
    if (slot < 1 || slot > this.size || this.used.has(slot)) return false;
    this.used.add(slot);
    return true;
  }
  release(slot: number): void {
    this.used.delete(slot);
  }
  get inUse(): number {
    return this.used.size;
  }
}

const PREFIX_RE = /^[a-z][a-z0-9]{0,3}$/;

export interface NetworkOptions {
  prefix: string;
  subnet: string;
  log?: { info: (obj: object, msg?: string) => void; warn: (obj: object, msg?: string) => void };
}

export interface CapsuleNetwork extends SlotAddresses {
  slot: number;
  netns: string;
  /** Path runc joins for the capsule's network namespace. */
  netnsPath: string;
  veth: string;
}

/** The host's default-route interface, or null when the host has none. */
export async function defaultRouteInterface(): Promise<string | null> {
  const out = await run('ip', ['-4', '-o', 'route', 'show', 'default']);
  const m = /\bdev\s+(\S+)/.exec(out);
  return m ? m[1]! : null;
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch {
    return false;
  }
}

export class NetworkManager {
  readonly prefix: string;
  readonly subnet: Subnet;
  readonly slots: SlotAllocator;
  private hostReady: Promise<void> | undefined;
  private readonly log: NonNullable<NetworkOptions['log']>;

  constructor(opts: NetworkOptions) {
    if (!PREFIX_RE.test(opts.prefix)) {
      throw new NetworkError(
        `netPrefix must be 1-4 lowercase letters/digits starting with a letter, got "${opts.prefix}"`,
      );
    }
    this.prefix = opts.prefix;
    this.subnet = parseSubnet(opts.subnet);
    this.slots = new SlotAllocator(slotCount(this.subnet));
    this.log = opts.log ?? { info: () => {}, warn: () => {} };
  }

  netnsName(slot: number): string {
    return `${this.prefix}-ns-${slot}`;
  }
  vethName(slot: number): string {
    return `${this.prefix}-v${slot}`;
  }
  /** iptables chain names of this agent. */
  get chains(): { input: string; forward: string; postrouting: string } {
    const p = `WRENN-${this.prefix.toUpperCase()}`;
    return { input: `${p}-IN`, forward: `${p}-FWD`, postrouting: `${p}-POST` };
  }
  /** Interface pattern matching every host-side veth of this agent (and no other agent's). */
  get vethPattern(): string {
    return `${this.prefix}-v+`;
  }

  describe(slot: number): CapsuleNetwork {
    const netns = this.netnsName(slot);
    return {
      slot,
      netns,
      netnsPath: `/run/netns/${netns}`,
      veth: this.vethName(slot),
      ...slotAddresses(this.subnet, slot),
    };
  }

  /** Enables forwarding and (re)writes this agent's chains and their jumps. Idempotent; done once per run. */
  ensureHostSetup(): Promise<void> {
    this.hostReady ??= this.setUpHost().catch((err: unknown) => {
      this.hostReady = undefined;
      throw err;
    });
    return this.hostReady;
  }

  private async setUpHost(): Promise<void> {
    await fs.writeFile('/proc/sys/net/ipv4/ip_forward', '1');
    const uplink = await defaultRouteInterface();
    if (!uplink) this.log.warn({}, 'host has no default route: capsules get no outbound network');
    const { input, forward, postrouting } = this.chains;
    const v = this.vethPattern;
    const subnet = this.subnet.cidr;
    const filter = [
      '*filter',
      `:${input} - [0:0]`,
      `:${forward} - [0:0]`,
      // Capsules may answer the host (the agent talks to envd) but open nothing on it.
      `-A ${input} -i ${v} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`,
      `-A ${input} -i ${v} -j DROP`,
      // Nothing between capsules; nothing to link-local (cloud metadata) addresses.
      `-A ${forward} -i ${v} -o ${v} -j DROP`,
      `-A ${forward} -i ${v} -d 169.254.0.0/16 -j DROP`,
      ...(uplink
        ? [
            `-A ${forward} -i ${v} -o ${uplink} -j ACCEPT`,
            `-A ${forward} -i ${uplink} -o ${v} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`,
          ]
        : []),
      // Anything else from a capsule (other bridges, other agents' capsules) is dropped.
      `-A ${forward} -i ${v} -j DROP`,
      `-A ${forward} -o ${v} -j DROP`,
      'COMMIT',
      '',
    ];
    const nat = [
      '*nat',
      `:${postrouting} - [0:0]`,
      ...(uplink ? [`-A ${postrouting} -s ${subnet} -o ${uplink} -j MASQUERADE`] : []),
      'COMMIT',
      '',
    ];
    // --noflush keeps everyone else's rules; declaring our chains empties them first.
    await run('iptables-restore', ['-w', '--noflush'], { input: filter.join('\n') + nat.join('\n') });
    await this.ensureJump('filter', 'INPUT', input);
    await this.ensureJump('filter', 'FORWARD', forward);
    await this.ensureJump('nat', 'POSTROUTING', postrouting);
    this.log.info({ uplink, subnet, chains: this.chains }, 'capsule network rules in place');
  }

  private async ensureJump(table: string, chain: string, target: string): Promise<void> {
    const check = await runStatus('iptables', ['-w', '-t', table, '-C', chain, '-j', target]);
    if (check.code === 0) return;
    await run('iptables', ['-w', '-t', table, '-I', chain, '1', '-j', target]);
  }

  /** Removes this agent's chains and jumps (when the agent is retired; capsules' veths should be gone). */
  async removeHostSetup(): Promise<void> {
    const errors: unknown[] = [];
    const { input, forward, postrouting } = this.chains;
    for (const [table, chain, target] of [
      ['filter', 'INPUT', input],
      ['filter', 'FORWARD', forward],
      ['nat', 'POSTROUTING', postrouting],
    ] as const) {
      try {
        while ((await runStatus('iptables', ['-w', '-t', table, '-C', chain, '-j', target])).code === 0) {
          await run('iptables', ['-w', '-t', table, '-D', chain, '-j', target]);
        }
        const listed = await runStatus('iptables', ['-w', '-t', table, '-S', target]);
        if (listed.code === 0) {
          await run('iptables', ['-w', '-t', table, '-F', target]);
          await run('iptables', ['-w', '-t', table, '-X', target]);
        }
      } catch (err) {
        errors.push(err);
      }
    }
    this.hostReady = undefined;
    if (errors.length) throw new AggregateError(errors, `removing network rules of "${this.prefix}" failed`);
  }

  /**
   * Creates the namespace, veth pair and addresses of a slot. On failure it
   * removes what it made and nothing else (a namespace or link that already
   * existed under the same name is reported, not touched).
   */
  async create(slot: number): Promise<CapsuleNetwork> {
    await this.ensureHostSetup();
    const net = this.describe(slot);
    if (await exists(net.netnsPath)) throw new NetworkError(`network namespace ${net.netns} already exists`);
    if (await exists(`/sys/class/net/${net.veth}`))
      throw new NetworkError(`network interface ${net.veth} already exists`);
    try {
      await run('ip', ['-batch', '-'], {
        input: [`netns add ${net.netns}`, `link add ${net.veth} type veth peer name eth0 netns ${net.netns}`, ''].join(
          '\n',
        ),
      });
      // No IPv6 on the host side, so link-local addresses can't reach host services;
      // strict reverse-path filtering drops packets with a spoofed source.
      await fs.writeFile(`/proc/sys/net/ipv6/conf/${net.veth}/disable_ipv6`, '1');
      await fs.writeFile(`/proc/sys/net/ipv4/conf/${net.veth}/rp_filter`, '1');
      await run('ip', ['-batch', '-'], {
        input: [`addr add ${net.gatewayIp}/30 dev ${net.veth}`, `link set ${net.veth} up`, ''].join('\n'),
      });
      await run('ip', ['-netns', net.netns, '-batch', '-'], {
        input: [
          'link set lo up',
          `addr add ${net.capsuleIp}/30 dev eth0`,
          'link set eth0 up',
          `route add default via ${net.gatewayIp}`,
          '',
        ].join('\n'),
      });
      return net;
    } catch (err) {
      try {
        await this.remove(slot);
      } catch (undoErr) {
        throw new AggregateError([err, undoErr], `creating the network of slot ${slot} failed, and so did its cleanup`);
      }
      throw err;
    }
  }

  /** Removes a slot's veth and namespace if present; collects every failure. */
  async remove(slot: number): Promise<void> {
    // Names only: a leftover from a run with another subnet may lie outside today's slot range.
    const net = {
      veth: this.vethName(slot),
      netns: this.netnsName(slot),
      netnsPath: `/run/netns/${this.netnsName(slot)}`,
    };
    const errors: unknown[] = [];
    if (await exists(`/sys/class/net/${net.veth}`)) {
      await run('ip', ['link', 'del', net.veth]).catch((e: unknown) => errors.push(e));
    }
    if (await exists(net.netnsPath)) {
      await run('ip', ['netns', 'del', net.netns]).catch((e: unknown) => errors.push(e));
    }
    if (errors.length) throw new AggregateError(errors, `removing the network of slot ${slot} failed`);
  }

  /** True when both the namespace and the veth of a slot exist. */
  async isPresent(slot: number): Promise<boolean> {
    const net = this.describe(slot);
    return (await exists(net.netnsPath)) && (await exists(`/sys/class/net/${net.veth}`));
  }

  /** Slots of every namespace or veth of this agent found on the host. */
  async listHostSlots(): Promise<Set<number>> {
    const slots = new Set<number>();
    const nsRe = new RegExp(`^${this.prefix}-ns-(\\d+)$`);
    const vethRe = new RegExp(`^${this.prefix}-v(\\d+)$`);
    for (const name of await fs.readdir('/run/netns').catch(() => [] as string[])) {
      const m = nsRe.exec(name);
      if (m) slots.add(Number(m[1]));
    }
    for (const name of await fs.readdir('/sys/class/net').catch(() => [] as string[])) {
      const m = vethRe.exec(name);
      if (m) slots.add(Number(m[1]));
    }
    return slots;
  }
}
