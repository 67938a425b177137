// The recipe language of template builds: one instruction per array element,
// keywords case-insensitive. Parsing is pure (it runs at submission, so a bad
// recipe is a 400 naming the line and never a row); turning a step into the
// shell command a build capsule runs is pure too (wrapCommand).
//
//   RUN [--timeout=<duration>] <shell>   run as the current user, in WORKDIR, with the ENV
//   START <shell>                        start in the background (and in every capsule of the template)
//   ENV KEY=VALUE                        $VAR / ${VAR} expanded from the current env, $$ → $, unknown → ""
//   WORKDIR <path>                       created (mkdir -p), then used by later steps
//   USER <name>                          created if missing (adduser, passwordless sudo); later steps run as it
//   COPY <src>... <dst>                  from the uploaded archive's root into the capsule, owned by the user
import path from 'node:path/posix';

export class RecipeError extends Error {
  override name = 'RecipeError';
}

export type RecipeStep =
  | { kind: 'RUN'; line: number; text: string; cmd: string; timeoutMs: number | null }
  | { kind: 'START'; line: number; text: string; cmd: string }
  | { kind: 'ENV'; line: number; text: string; key: string; value: string }
  | { kind: 'WORKDIR'; line: number; text: string; path: string }
  | { kind: 'USER'; line: number; text: string; name: string }
  | { kind: 'COPY'; line: number; text: string; srcs: string[]; dst: string };

export const USER_NAME_RE = /^[A-Za-z_][A-Za-z0-9_-]{0,31}$/;
export const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** A RUN step may ask for up to this long. */
export const MAX_STEP_TIMEOUT_MS = 2 * 3600_000;
const MAX_LINE_LENGTH = 64 * 1024;

const UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3600_000 };

/** A Go-style duration ("30s", "1m30s", "500ms", "1.5h") in milliseconds; null when malformed. */
export function parseDuration(s: string): number | null {
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d+)?|\.\d+)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * UNITS[m[2]!]!;
    pos = re.lastIndex;
  }
  if (pos === 0 || pos !== s.length) return null;
  return total;
}

/** Single-quoted for /bin/sh: the only character needing care inside '…' is ' itself. */
export function shQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** Checks an ENV value's $-syntax; expansion itself happens when the step runs (expandEnv). */
function checkExpansion(value: string): string | null {
  for (let i = 0; i < value.length; i++) {
    if (value[i] !== '$') continue;
    if (value[i + 1] === '{') {
      const end = value.indexOf('}', i + 2);
      if (end < 0) return 'unclosed "${" in the value';
      if (!ENV_KEY_RE.test(value.slice(i + 2, end))) return `"\${${value.slice(i + 2, end)}}" is not a variable name`;
      i = end;
    } else if (value[i + 1] === '$') i++;
  }
  return null;
}

/** `$VAR`, `${VAR}` from env (unknown → ""), `$$` → `$`; any other `$` stays. */
export function expandEnv(value: string, env: Readonly<Record<string, string>>): string {
  return value.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (all, a?: string, b?: string) => (all === '$$' ? '$' : (env[(a ?? b)!] ?? '')),
  );
}

/** An archive path given to COPY: relative to the archive root, no "..", normalised ("./a//b" → "a/b"). */
export function normaliseArchivePath(p: string): string | null {
  if (p === '' || p.startsWith('/') || p.includes('\0') || p.includes('\\')) return null;
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.some((s) => s === '..')) return null;
  return parts.length ? parts.join('/') : '.';
}

function parseLine(raw: string, line: number): RecipeStep | null {
  const fail = (msg: string): never => {
    throw new RecipeError(`recipe line ${line}: ${msg}`);
  };
  if (typeof raw !== 'string') fail('must be a string');
  if (raw.length > MAX_LINE_LENGTH) fail(`longer than ${MAX_LINE_LENGTH} characters`);
  if (raw.includes('\0')) fail('contains a NUL character');
  const text = raw.trim();
  if (text === '' || text.startsWith('#')) return null;
  const m = /^(\S+)(?:\s+([\s\S]*))?$/.exec(text)!;
  const keyword = m[1]!.toUpperCase();
  const rest = (m[2] ?? '').trim();
  switch (keyword) {
    case 'RUN': {
      let cmd = rest;
      let timeoutMs: number | null = null;
      const flag = /^--([A-Za-z-]+)=(\S*)\s*/.exec(cmd);
      if (flag) {
        if (flag[1] !== 'timeout') fail(`RUN has no option --${flag[1]} (only --timeout=<duration>)`);
        timeoutMs = parseDuration(flag[2]!);
        if (timeoutMs === null || timeoutMs <= 0) {
          fail(`RUN --timeout must be a positive duration such as 90s, 5m or 1h30m, got "${flag[2]}"`);
        }
        if (timeoutMs! > MAX_STEP_TIMEOUT_MS) fail('RUN --timeout must be at most 2h');
        cmd = cmd.slice(flag[0].length);
      }
      if (cmd === '') fail('RUN needs a command');
      return { kind: 'RUN', line, text, cmd, timeoutMs };
    }
    case 'START':
      if (rest === '') fail('START needs a command');
      return { kind: 'START', line, text, cmd: rest };
    case 'ENV': {
      const kv = /^([^=\s]+)=([\s\S]*)$/.exec(rest);
      if (!kv) fail('ENV must look like KEY=VALUE');
      const key = kv![1]!;
      if (!ENV_KEY_RE.test(key)) fail(`"${key}" is not a valid variable name (letters, digits, _; not first a digit)`);
      const bad = checkExpansion(kv![2]!);
      if (bad) fail(`ENV ${key}: ${bad}`);
      return { kind: 'ENV', line, text, key, value: kv![2]! };
    }
    case 'WORKDIR':
      if (rest === '') fail('WORKDIR needs a path');
      return { kind: 'WORKDIR', line, text, path: rest };
    case 'USER':
      if (!USER_NAME_RE.test(rest)) {
        fail(`USER needs a user name of letters, digits, "_" or "-" (not first a digit or "-"), got "${rest}"`);
      }
      return { kind: 'USER', line, text, name: rest };
    case 'COPY': {
      const args = rest.split(/\s+/).filter(Boolean);
      if (args.length < 2) fail('COPY needs at least one source and a destination: COPY <src>... <dst>');
      const dst = args.pop()!;
      const srcs = args.map((s) => {
        const n = normaliseArchivePath(s);
        if (n === null) fail(`COPY source "${s}" must be a path inside the archive (relative, without "..")`);
        return n!;
      });
      return { kind: 'COPY', line, text, srcs, dst };
    }
    default:
      return fail(`unknown instruction "${m[1]}" (expected RUN, START, ENV, WORKDIR, USER or COPY)`);
  }
}

/** The steps of a recipe; a RecipeError names the first bad line (1-based). Blank and `#` lines are skipped. */
export function parseRecipe(lines: readonly string[]): RecipeStep[] {
  const steps: RecipeStep[] = [];
  lines.forEach((raw, i) => {
    const s = parseLine(raw, i + 1);
    if (s) steps.push(s);
  });
  if (steps.length === 0) throw new RecipeError('recipe has no instructions');
  return steps;
}

export interface Healthcheck {
  intervalMs: number;
  timeoutMs: number;
  startPeriodMs: number;
  /** 0 = unlimited (until the deadline). */
  retries: number;
  cmd: string;
}

/** `[--interval=3s] [--timeout=10s] [--start-period=0s] [--retries=0] <cmd>` */
export function parseHealthcheck(text: string): Healthcheck {
  const fail = (msg: string): never => {
    throw new RecipeError(`healthcheck: ${msg}`);
  };
  const hc: Healthcheck = { intervalMs: 3000, timeoutMs: 10_000, startPeriodMs: 0, retries: 0, cmd: '' };
  let rest = text.trim();
  for (;;) {
    const m = /^--(\S*?)(?:=(\S*))?(?:\s+|$)/.exec(rest);
    if (!m || !rest.startsWith('--')) break;
    const [all, key, value] = m;
    if (value === undefined) fail(`option --${key} must be written --${key}=<value>`);
    if (key === 'retries') {
      if (!/^\d{1,6}$/.test(value!)) fail(`--retries must be a whole number, got "${value}"`);
      hc.retries = Number(value);
    } else if (key === 'interval' || key === 'timeout' || key === 'start-period') {
      const ms = parseDuration(value!);
      if (ms === null || ms < 0 || (key !== 'start-period' && ms === 0) || ms > MAX_STEP_TIMEOUT_MS) {
        fail(`--${key} must be a duration such as 3s or 1m (at most 2h), got "${value}"`);
      }
      if (key === 'interval') hc.intervalMs = ms!;
      else if (key === 'timeout') hc.timeoutMs = ms!;
      else hc.startPeriodMs = ms!;
    } else {
      fail(`unknown option --${key} (expected --interval, --timeout, --start-period or --retries)`);
    }
    rest = rest.slice(all.length);
  }
  if (rest === '') fail('a command is required after the options');
  hc.cmd = rest;
  return hc;
}

/** What a step runs with: the state RUN/START see, changed by ENV, WORKDIR and USER. */
export interface ExecContext {
  user: string;
  workdir: string;
  env: Record<string, string>;
}

/**
 * The /bin/sh script for `cmd` in ctx: `cd '<dir>' && K='v' … /bin/sh -c '<cmd>'`, wrapped in
 * `su '<user>' -s /bin/sh -c '…'` for a non-root user. The env is spelled out after su, so su's
 * own resets (HOME, PATH) do not matter; keys are sorted so the script is deterministic.
 */
export function wrapCommand(ctx: ExecContext, cmd: string, opts: { background?: boolean } = {}): string {
  const assigns = Object.keys(ctx.env)
    .filter((k) => ENV_KEY_RE.test(k))
    .sort()
    .map((k) => `${k}=${shQuote(ctx.env[k]!)}`);
  // Assignments first: `nohup K=v cmd` would take "K=v" for the command.
  const run = [...assigns, ...(opts.background ? ['nohup'] : []), '/bin/sh', '-c', shQuote(cmd)].join(' ');
  const body = opts.background ? `${run} >/dev/null 2>&1 &` : run;
  const inner = `cd ${shQuote(ctx.workdir)} && ${body}`;
  return ctx.user === 'root' ? inner : `su ${shQuote(ctx.user)} -s /bin/sh -c ${shQuote(inner)}`;
}

/** Where a WORKDIR or COPY destination lands: relative paths against the current WORKDIR. */
export function resolvePath(workdir: string, p: string): string {
  return path.resolve(workdir, p);
}

/** Creates the user if missing, with passwordless sudo (run as root). */
export function ensureUserScript(name: string): string {
  const u = shQuote(name);
  return (
    `id ${u} >/dev/null 2>&1 || (adduser --disabled-password --gecos '' --shell /bin/bash ${u} >/dev/null && ` +
    `echo ${shQuote(`${name} ALL=(ALL) NOPASSWD:ALL`)} >> /etc/sudoers)`
  );
}

export const ARCHIVE_DIR = '/tmp/build-files';

/**
 * COPY (run as root): each source from the extracted archive into dst. A directory's contents go
 * into dst; a file goes to dst, or into it when dst ends with "/", exists as a directory, or
 * there are several sources. What was copied (and dst, when COPY created it) is then owned by
 * the user; nothing else under dst is touched (COPY into /usr/local/bin must not chown it).
 * `cp -RP`, not `cp -a`: copying `dir/.` with -a would give an existing dst the archive's owner.
 */
export function copyScript(srcs: string[], dstAbs: string, intoDir: boolean, user: string): string {
  const d = shQuote(dstAbs);
  const owner = shQuote(`${user}:`);
  const chown = user !== 'root';
  const dirMode = intoDir || srcs.length > 1;
  const lines = ['set -e', `created=0; [ -e ${d} ] || created=1`];
  for (const src of srcs) {
    const s = shQuote(src === '.' ? ARCHIVE_DIR : `${ARCHIVE_DIR}/${src}`);
    const base = shQuote(path.basename(src === '.' ? ARCHIVE_DIR : src));
    lines.push(
      `if [ -d ${s} ] && [ ! -L ${s} ]; then`,
      `  mkdir -p ${d} && cp -RP ${s}/. ${d}/`,
      chown ? `  (cd ${s} && find . -mindepth 1 -print0) | (cd ${d} && xargs -0 -r chown -h ${owner})` : '  :',
      dirMode || intoDir ? `else` : `elif [ -d ${d} ]; then`,
      `  mkdir -p ${d} && cp -RP ${s} ${d}/`,
      chown ? `  chown -hR ${owner} ${d}/${base}` : '  :',
      ...(dirMode || intoDir
        ? []
        : [`else`, `  mkdir -p "$(dirname ${d})" && cp -RP ${s} ${d}`, chown ? `  chown -hR ${owner} ${d}` : '  :']),
      `fi`,
    );
  }
  if (chown) lines.push(`if [ "$created" = 1 ]; then chown ${owner} ${d}; fi`);
  return lines.join('\n');
}
