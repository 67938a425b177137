// @wrenn/sdk: TypeScript client for Wrenn capsules.
export { Capsule, type CapsuleCreateOpts, type CapsuleListOpts } from './capsule.js';
export {
  Commands,
  CommandHandle,
  type CommandResult,
  type ConnectOpts,
  type RunOpts,
  type Signal,
} from './commands.js';
export {
  Files,
  WatchHandle,
  type FilesystemEvent,
  type FilesystemEventType,
  type WatchOpts,
  type WriteData,
} from './files.js';
export { Pty, PtyHandle, type PtyConnectOpts, type PtyCreateOpts, type PtySize } from './pty.js';
export {
  DEFAULT_BASE_URL,
  capsuleHost,
  domainOf,
  resolveConfig,
  type ConnectionConfig,
  type ConnectionOpts,
} from './config.js';
export {
  AuthenticationError,
  ConflictError,
  ForbiddenError,
  InvalidArgumentError,
  NotFoundError,
  RateLimitError,
  TimeoutError,
  UnavailableError,
  WrennError,
  errorFromMessage,
  errorFromResponse,
} from './errors.js';
export type { CapsuleInfo, CapsuleStatus, EntryInfo, ProcessInfo, TemplateInfo } from './types.js';
