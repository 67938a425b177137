// The API's JSON shapes (snake_case, as on the wire) and the SDK's own
// (camelCase) views of them.

export type CapsuleStatus =
  'pending' | 'starting' | 'running' | 'paused' | 'hibernated' | 'stopped' | 'missing' | 'error';

/** A capsule as the API returns it. */
export interface CapsuleWire {
  id: string;
  status: CapsuleStatus;
  template: string;
  vcpus: number;
  memory_mb: number;
  disk_size_mb?: number;
  timeout_sec: number;
  guest_ip?: string;
  host_ip?: string;
  created_at: string;
  started_at?: string | null;
  last_active_at?: string | null;
  last_updated?: string;
  metadata?: Record<string, string> | null;
  error?: string | null;
}

export interface CapsuleInfo {
  /** `cl-…` */
  id: string;
  status: CapsuleStatus;
  template: string;
  vcpus: number;
  memoryMb: number;
  diskSizeMb?: number;
  /** Inactivity TTL in seconds (0 = none): the capsule is paused after this long without exec or ping. */
  timeoutSec: number;
  metadata: Record<string, string>;
  createdAt: Date;
  startedAt?: Date;
  lastActiveAt?: Date;
  /** Why the capsule is in state `error`. */
  error?: string;
}

export function toCapsuleInfo(w: CapsuleWire): CapsuleInfo {
  const info: CapsuleInfo = {
    id: w.id,
    status: w.status,
    template: w.template,
    vcpus: w.vcpus,
    memoryMb: w.memory_mb,
    timeoutSec: w.timeout_sec,
    metadata: w.metadata ?? {},
    createdAt: new Date(w.created_at),
  };
  if (w.disk_size_mb !== undefined) info.diskSizeMb = w.disk_size_mb;
  if (w.started_at) info.startedAt = new Date(w.started_at);
  if (w.last_active_at) info.lastActiveAt = new Date(w.last_active_at);
  if (w.error) info.error = w.error;
  return info;
}

export interface TemplateWire {
  name: string;
  type: 'base' | 'snapshot';
  vcpus?: number | null;
  memory_mb?: number | null;
  size_bytes?: number;
  created_at: string;
  platform?: boolean;
}

export interface TemplateInfo {
  name: string;
  type: 'base' | 'snapshot';
  vcpus?: number;
  memoryMb?: number;
  sizeBytes?: number;
  createdAt: Date;
  /** Shared by the platform rather than owned by your team. */
  platform?: boolean;
}

export function toTemplateInfo(w: TemplateWire): TemplateInfo {
  const t: TemplateInfo = { name: w.name, type: w.type, createdAt: new Date(w.created_at) };
  if (w.vcpus != null) t.vcpus = w.vcpus;
  if (w.memory_mb != null) t.memoryMb = w.memory_mb;
  if (w.size_bytes !== undefined) t.sizeBytes = w.size_bytes;
  if (w.platform !== undefined) t.platform = w.platform;
  return t;
}

export interface FileEntryWire {
  name: string;
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'unknown';
  size: number;
  mode: number;
  permissions: string;
  owner: string;
  group: string;
  modified_at: number;
  symlink_target?: string | null;
}

export interface EntryInfo {
  name: string;
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'unknown';
  size: number;
  mode: number;
  /** e.g. `-rwxr-xr-x` */
  permissions: string;
  owner: string;
  group: string;
  modifiedTime: Date;
  symlinkTarget?: string;
}

export function toEntryInfo(w: FileEntryWire): EntryInfo {
  const e: EntryInfo = {
    name: w.name,
    path: w.path,
    type: w.type,
    size: w.size,
    mode: w.mode,
    permissions: w.permissions,
    owner: w.owner,
    group: w.group,
    modifiedTime: new Date(w.modified_at * 1000),
  };
  if (w.symlink_target) e.symlinkTarget = w.symlink_target;
  return e;
}

export interface ProcessInfo {
  pid: number;
  tag?: string;
  cmd: string;
  args: string[];
}
