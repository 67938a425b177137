// The host agent's interface to an isolation technology. The sandbox manager
// only talks to this, so a Firecracker runtime can be added beside the
// container runtime without touching the manager.

export interface CapsuleSpec {
  /** Wire id (`cl-…`), also used for names on the host. */
  id: string;
  /** Template directory (see Layout): its `rootfs/` is the read-only lower layer. */
  templateDir: string;
  vcpus: number;
  memoryMb: number;
  diskSizeMb: number;
}

export interface CapsuleHandle {
  id: string;
  /** Address on which the host reaches the capsule (envd listens on port 49983 there). */
  hostIp: string;
  /** PID of the capsule's init on the host. */
  pid: number;
}

export interface CapsuleStats {
  /** Cumulative CPU time used by the capsule, in nanoseconds. */
  cpuNs: number;
  /** Resident memory of the capsule's processes, in bytes. */
  memoryBytes: number;
  /** Bytes allocated on disk by the capsule's own (upper) layer. */
  diskBytes: number;
}

export type RuntimeState = 'running' | 'paused';

export interface RecoveredCapsule {
  spec: CapsuleSpec;
  handle: CapsuleHandle;
  state: RuntimeState;
}

export interface Runtime {
  readonly name: string;
  /** Creates and starts a capsule; rolls back everything it made when any step fails. */
  create(spec: CapsuleSpec): Promise<CapsuleHandle>;
  /** Freezes every process of the capsule; it keeps its memory and uses no CPU. */
  pause(id: string): Promise<void>;
  resume(id: string): Promise<void>;
  /** Removes everything the capsule had on the host; throws an AggregateError listing what failed. */
  destroy(id: string): Promise<void>;
  stats(id: string): Promise<CapsuleStats>;
  /**
   * Called once at start: adopts capsules a previous run of this agent left
   * running or paused, and removes every other trace (mounts, namespaces,
   * cgroups, iptables rules, directories) of capsules that are gone.
   */
  recover(): Promise<RecoveredCapsule[]>;
  /** Writes the capsule's root file system (its upper layer merged over the template) into destRootfs. */
  exportRootfs(id: string, destRootfs: string): Promise<{ sizeBytes: number }>;
}
