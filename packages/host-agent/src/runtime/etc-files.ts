// The /etc/hosts, /etc/resolv.conf and /etc/hostname a capsule sees.
import fs from 'node:fs/promises';
import net from 'node:net';
import { CAPSULE_HOSTNAME } from './oci.js';

export const FALLBACK_NAMESERVER = '1.1.1.1';

function isLoopback(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1' || ip === '0.0.0.0';
}

/**
 * A resolv.conf for capsules from the host's: its IPv4 nameservers that are
 * not loopback (a capsule's loopback is its own) and its search domains.
 * When the host only has a local stub resolver (systemd-resolved), its
 * upstream list is used; with nothing usable, a public resolver.
 */
export function capsuleResolvConf(hostResolv: string, upstreamResolv = ''): string {
  const pick = (text: string) => {
    const ns: string[] = [];
    let search = '';
    for (const line of text.split('\n')) {
      const [key, ...rest] = line.trim().split(/\s+/);
      if (key === 'nameserver' && rest[0] && net.isIPv4(rest[0]) && !isLoopback(rest[0])) ns.push(rest[0]);
      if (key === 'search' && rest.length) search = rest.join(' ');
    }
    return { ns, search };
  };
  let chosen = pick(hostResolv);
  if (chosen.ns.length === 0) chosen = pick(upstreamResolv);
  const ns = chosen.ns.length ? chosen.ns.slice(0, 3) : [FALLBACK_NAMESERVER];
  return [...(chosen.search ? [`search ${chosen.search}`] : []), ...ns.map((n) => `nameserver ${n}`), ''].join('\n');
}

export async function hostResolvConf(): Promise<string> {
  const read = (f: string) => fs.readFile(f, 'utf8').catch(() => '');
  return capsuleResolvConf(await read('/etc/resolv.conf'), await read('/run/systemd/resolve/resolv.conf'));
}

export function capsuleHosts(capsuleIp: string): string {
  return [
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    `${capsuleIp}\t${CAPSULE_HOSTNAME}`,
    '',
  ].join('\n');
}

export const capsuleHostname = (): string => `${CAPSULE_HOSTNAME}\n`;
