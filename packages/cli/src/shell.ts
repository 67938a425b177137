// `wrenn shell`: the local terminal attached to a PTY in the capsule. Raw mode
// while attached, resize on SIGWINCH, and the terminal restored on any exit.
import type { Capsule } from '@wrenn/sdk';

export async function shell(
  capsule: Capsule,
  opts: { cwd?: string; env?: Record<string, string>; cmd?: string },
): Promise<number> {
  const stdin = process.stdin;
  const stdout = process.stdout;
  const interactive = stdin.isTTY === true;
  const size = () => ({ cols: stdout.columns || 80, rows: stdout.rows || 24 });

  const pty = await capsule.pty.create({
    ...size(),
    cmd: opts.cmd,
    cwd: opts.cwd,
    envs: { TERM: process.env.TERM || 'xterm-256color', ...opts.env },
    onData: (d) => stdout.write(d),
  });

  const onInput = (d: Buffer) => {
    try {
      pty.sendInput(d);
    } catch {
      // The connection is closing; wait() reports why.
    }
  };
  // Piped input (scripts, tests): its end is Ctrl-D, so the shell sees EOF.
  const onEnd = () => onInput(Buffer.from([4]));
  const onResize = () => {
    try {
      pty.resize(size());
    } catch {
      // Same as above.
    }
  };
  const restore = () => {
    if (interactive) stdin.setRawMode(false);
  };

  if (interactive) stdin.setRawMode(true);
  process.once('exit', restore);
  stdin.on('data', onInput);
  stdin.on('end', onEnd);
  process.on('SIGWINCH', onResize);
  stdin.resume();
  try {
    const { exitCode } = await pty.wait();
    return exitCode >= 0 && exitCode <= 255 ? exitCode : 1;
  } finally {
    restore();
    process.off('exit', restore);
    stdin.off('data', onInput);
    stdin.off('end', onEnd);
    process.off('SIGWINCH', onResize);
    stdin.pause();
  }
}
