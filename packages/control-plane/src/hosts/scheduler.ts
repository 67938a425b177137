// Picks the host for a new capsule. Platform teams schedule onto `regular`
// hosts; BYOC teams onto their own hosts only.
import type { HostRow } from '../db/schema.js';

export interface PlacementRequest {
  teamId: string;
  /** True when the team runs its capsules on its own (BYOC) hosts. */
  byoc: boolean;
  vcpus: number;
  memoryMb: number;
  diskSizeMb: number;
}

export interface Scheduler {
  /** An online host able to take the capsule, or null when there is none. */
  pick(request: PlacementRequest): Promise<HostRow | null>;
}
