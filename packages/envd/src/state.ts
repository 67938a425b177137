// Run-time state of envd: the defaults set by POST /init and the start-up
// options. Nothing here is persisted; a restarted envd starts from scratch.
export interface EnvdOptions {
  /** Idle time after which a server stream sends a keepalive event. */
  keepaliveMs: number;
}

export class EnvdState {
  /** Environment variables every new process gets (before its request's own). */
  readonly envVars = new Map<string, string>();
  accessToken: string | undefined;
  defaultUser = 'root';
  /** Base of relative paths and default cwd; unset means the user's home. */
  defaultWorkdir: string | undefined;

  constructor(readonly options: EnvdOptions) {}
}
