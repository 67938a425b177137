// The OCI runtime configuration (config.json) of a capsule, for runc.
import fs from 'node:fs/promises';
import { ENVD_PORT } from './network.js';
import { seccompProfile } from './seccomp.js';

/** Docker's default capability set: enough for package managers and servers, nothing that reaches the host. */
export const CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** Kernel information that must not leak into a capsule (as Docker masks them). */
export const MASKED_PATHS = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];
export const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

export const CPU_PERIOD_US = 100_000;
export const CAPSULE_HOSTNAME = 'capsule';
export const ENVD_DIR_IN_CAPSULE = '/opt/wrenn';
export const CAPSULE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface OciInput {
  id: string;
  /** Host path of the capsule's (overlay) root. */
  rootfs: string;
  netnsPath: string;
  /** Host directory bind-mounted read-only at /opt/wrenn. */
  envdDir: string;
  hostsFile: string;
  resolvFile: string;
  hostnameFile: string;
  cgroupsPath: string;
  vcpus: number;
  memoryMb: number;
  pidsLimit: number;
  /** The host accounts swap per cgroup (memory.memsw.*): then swap cannot dodge the memory limit. */
  swapAccounting: boolean;
  /** RLIMIT_NOFILE of the capsule (1048576, or the host's hard limit when it is lower). */
  nofile: number;
}

export const WANTED_NOFILE = 1048576;

/**
 * The open-files limit capsules get: raising a hard limit needs CAP_SYS_RESOURCE,
 * which the agent may lack (e.g. when the host itself is a container), so never
 * more than the agent's own hard limit.
 */
export async function capsuleNofile(): Promise<number> {
  const limits = await fs.readFile('/proc/self/limits', 'utf8').catch(() => '');
  const m = /^Max open files\s+\S+\s+(\S+)/m.exec(limits);
  const hard = m && m[1] !== 'unlimited' ? Number(m[1]) : WANTED_NOFILE;
  return Math.min(WANTED_NOFILE, hard);
}

export function ociConfig(c: OciInput): object {
  const memoryBytes = c.memoryMb * 2 ** 20;
  const ro = (destination: string, source: string) => ({
    destination,
    type: 'bind',
    source,
    options: ['bind', 'ro', 'nosuid', 'nodev', 'noexec'],
  });
  return {
    ociVersion: '1.0.2',
    root: { path: c.rootfs, readonly: false },
    hostname: CAPSULE_HOSTNAME,
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: [
        `${ENVD_DIR_IN_CAPSULE}/tini`,
        '-s',
        '--',
        `${ENVD_DIR_IN_CAPSULE}/node`,
        `${ENVD_DIR_IN_CAPSULE}/envd.mjs`,
        '--port',
        String(ENVD_PORT),
      ],
      env: [`PATH=${CAPSULE_PATH}`, 'HOME=/root', 'WRENN_SANDBOX=true', `WRENN_SANDBOX_ID=${c.id}`],
      cwd: '/',
      capabilities: {
        bounding: CAPABILITIES,
        effective: CAPABILITIES,
        permitted: CAPABILITIES,
      },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: c.nofile, soft: c.nofile }],
      noNewPrivileges: true,
      // Under host memory pressure the kernel picks capsules before host services.
      oomScoreAdj: 500,
    },
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
      },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
      },
      {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      {
        destination: '/sys/fs/cgroup',
        type: 'cgroup',
        source: 'cgroup',
        options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
      },
      {
        destination: ENVD_DIR_IN_CAPSULE,
        type: 'bind',
        source: c.envdDir,
        options: ['rbind', 'ro', 'nosuid', 'nodev'],
      },
      // Read-only: a writable bind would be host disk outside the capsule's disk limit.
      ro('/etc/hosts', c.hostsFile),
      ro('/etc/resolv.conf', c.resolvFile),
      ro('/etc/hostname', c.hostnameFile),
    ],
    linux: {
      namespaces: [
        { type: 'pid' },
        { type: 'network', path: c.netnsPath },
        { type: 'ipc' },
        { type: 'uts' },
        { type: 'mount' },
      ],
      cgroupsPath: c.cgroupsPath,
      resources: {
        devices: [{ allow: false, access: 'rwm' }],
        memory: {
          limit: memoryBytes,
          ...(c.swapAccounting ? { swap: memoryBytes } : {}),
        },
        cpu: { period: CPU_PERIOD_US, quota: Math.round(c.vcpus * CPU_PERIOD_US) },
        pids: { limit: c.pidsLimit },
      },
      rootfsPropagation: 'private',
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
      seccomp: seccompProfile(),
    },
  };
}
