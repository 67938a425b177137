// Runs host tools (ip, iptables, mount, runc, ...) without a shell, so no
// argument is ever interpreted, and turns a failure into an error that names
// the command and carries its stderr.
import { spawn } from 'node:child_process';

export class CommandError extends Error {
  override name = 'CommandError';
  constructor(
    readonly command: string,
    readonly code: number | null,
    readonly stderr: string,
    readonly stdout: string,
  ) {
    super(`${command} failed (${code === null ? 'killed' : `exit ${code}`})${stderr ? `: ${stderr.trim()}` : ''}`);
  }
}

export interface RunOptions {
  /** Written to the command's stdin, then closed. */
  input?: string;
  /** A file descriptor both stdout and stderr go to (instead of being collected). */
  outputFd?: number;
  env?: NodeJS.ProcessEnv;
  /** Kill the command after this many milliseconds. */
  timeoutMs?: number;
}

/** Runs `cmd args...` and resolves with its stdout; rejects with CommandError on a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const out = opts.outputFd ?? 'pipe';
    const child = spawn(cmd, args, {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', out, out],
      env: opts.env ?? process.env,
      timeout: opts.timeoutMs,
      killSignal: 'SIGKILL',
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => reject(new CommandError(`${cmd} ${args.join(' ')}`, null, err.message, '')));
    child.on('close', (code) => {
      if (code === 0) resolve(stdout);
      else reject(new CommandError(`${cmd} ${args.join(' ')}`, code, stderr, stdout));
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Like run, but resolves with the exit code and output instead of rejecting on failure. */
export function runStatus(
  cmd: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(cmd, args, opts).then(
    (stdout) => ({ code: 0, stdout, stderr: '' }),
    (err: unknown) => {
      if (err instanceof CommandError) return { code: err.code ?? -1, stdout: err.stdout, stderr: err.stderr };
      throw err;
    },
  );
}
