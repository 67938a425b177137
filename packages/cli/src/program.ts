// The `wrenn` command line: one subcommand per capsule operation, all over
// @wrenn/sdk. Configuration comes from WRENN_API_KEY and WRENN_BASE_URL only.
import { Command, CommanderError, Option } from 'commander';
import { Capsule, NotFoundError, WrennError, type CapsuleInfo, type CapsuleStatus } from '@wrenn/sdk';
import { copy } from './cp.js';
import { ago, bytes, mib, table } from './format.js';
import { collectKeyValue, execCommand, parseDuration, parsePositiveInt, parseSizeMb } from './parse.js';
import { shell } from './shell.js';

export const VERSION = '0.1.0';

const STATUSES: CapsuleStatus[] = ['pending', 'starting', 'running', 'paused', 'stopped', 'missing', 'error'];

/** A failure to report as `wrenn: <message>` with this exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : text + '\n');
}

function json(value: unknown): void {
  out(JSON.stringify(value, null, 2));
}

/** The one line printed for an error. */
export function describeError(err: unknown): string {
  if (err instanceof WrennError && err.code === 'missing_api_key') {
    return 'WRENN_API_KEY is not set (export it, or load .wrenn/dev.env: set -a; . .wrenn/dev.env; set +a)';
  }
  if (err instanceof Error) return err.message.split('\n')[0] ?? err.message;
  return String(err);
}

function infoRows(c: CapsuleInfo): string[][] {
  const rows = [
    ['id', c.id],
    ['status', c.status + (c.error ? ` (${c.error})` : '')],
    ['template', c.template],
    ['vcpus', String(c.vcpus)],
    ['memory', mib(c.memoryMb)],
  ];
  if (c.diskSizeMb !== undefined) rows.push(['disk', mib(c.diskSizeMb)]);
  rows.push(['timeout', c.timeoutSec ? `${c.timeoutSec}s` : 'none']);
  rows.push(['created', c.createdAt.toISOString()]);
  if (c.lastActiveAt) rows.push(['last active', c.lastActiveAt.toISOString()]);
  for (const [k, v] of Object.entries(c.metadata)) rows.push([`metadata.${k}`, v]);
  return rows;
}

export function buildProgram(): Command {
  const program = new Command('wrenn')
    .description('Command-line client for Wrenn capsules.')
    .addHelpText(
      'after',
      '\nEnvironment:\n' +
        '  WRENN_API_KEY   team API key (required)\n' +
        '  WRENN_BASE_URL  API address (default http://localhost:8000)\n' +
        'No file is read implicitly. To use what `npm start` wrote:\n' +
        '  set -a; . .wrenn/dev.env; set +a',
    )
    .version(VERSION)
    .enablePositionalOptions()
    .showSuggestionAfterError(true);

  program
    .command('create')
    .description('create a capsule and print its id')
    .option('-t, --template <name>', 'template (default minimal)')
    .option('--vcpus <n>', 'virtual CPUs', parsePositiveInt)
    .option('--memory <size>', 'memory, in MiB or with a unit (512M, 2G)', parseSizeMb)
    .option('--disk <size>', 'disk size, in MiB or with a unit', parseSizeMb)
    .option(
      '--timeout <duration>',
      'pause after this long without activity (300, 90s, 5m, 1h; 0 = never)',
      parseDuration,
    )
    .option('-m, --metadata <key=value>', 'label the capsule (repeatable)', collectKeyValue)
    .option('--json', 'print the capsule as JSON')
    .action(async (o: CreateOpts) => {
      const capsule = await Capsule.create({
        template: o.template,
        vcpus: o.vcpus,
        memoryMb: o.memory,
        diskSizeMb: o.disk,
        timeoutSec: o.timeout,
        metadata: o.metadata,
      });
      if (o.json) json(await capsule.info());
      else out(capsule.id);
    });

  program
    .command('list')
    .alias('ls')
    .description("list your team's capsules")
    .addOption(new Option('--status <status>', 'only capsules in this state').choices(STATUSES))
    .option('-m, --metadata <key=value>', 'only capsules with this label (repeatable)', collectKeyValue)
    .option('--json', 'print JSON')
    .action(async (o: { status?: CapsuleStatus; metadata?: Record<string, string>; json?: boolean }) => {
      const list = await Capsule.list({ status: o.status, metadata: o.metadata });
      if (o.json) return json(list);
      if (list.length === 0) return out('no capsules');
      const now = new Date();
      out(
        table(
          ['ID', 'STATUS', 'TEMPLATE', 'VCPUS', 'MEMORY', 'CREATED'],
          list.map((c) => [c.id, c.status, c.template, String(c.vcpus), mib(c.memoryMb), ago(c.createdAt, now)]),
        ),
      );
    });

  program
    .command('info')
    .description("show a capsule's details")
    .argument('<id>', 'capsule id')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { json?: boolean }) => {
      const info = await Capsule.getInfo(id);
      if (o.json) return json(info);
      out(table(['FIELD', 'VALUE'], infoRows(info)).split('\n').slice(1).join('\n'));
    });

  program
    .command('exec')
    .summary('run a command in a capsule')
    .description(
      'Runs a command in a capsule, streaming its output; exits with its exit code.\n' +
        'One word after -- is a shell command line (pipes work); several are a program and its arguments.',
    )
    .argument('<id>', 'capsule id')
    .argument('<command...>', 'command and arguments (after --)')
    .option('--cwd <dir>', 'working directory')
    .option('-e, --env <key=value>', 'environment variable (repeatable)', collectKeyValue)
    .option('-u, --user <name>', 'user to run as')
    .option('--timeout <duration>', 'kill the command after this long (300, 90s, 5m)', parseDuration)
    .action(async (id: string, words: string[], o: ExecOpts) => {
      const { cmd, args } = execCommand(words);
      const capsule = await Capsule.connect(id, { autoResume: false });
      const res = await capsule.commands.run(cmd, {
        args,
        envs: o.env,
        cwd: o.cwd,
        user: o.user,
        timeoutMs: o.timeout ? o.timeout * 1000 : undefined,
        onStdout: (d) => process.stdout.write(d),
        onStderr: (d) => process.stderr.write(d),
      });
      process.exitCode = res.exitCode >= 0 && res.exitCode <= 255 ? res.exitCode : 1;
    });

  program
    .command('shell')
    .description('open an interactive terminal in a capsule')
    .argument('<id>', 'capsule id')
    .option('--cwd <dir>', 'working directory')
    .option('-e, --env <key=value>', 'environment variable (repeatable)', collectKeyValue)
    .option('--cmd <program>', 'program to run instead of /bin/bash')
    .action(async (id: string, o: { cwd?: string; env?: Record<string, string>; cmd?: string }) => {
      const capsule = await Capsule.connect(id, { autoResume: false });
      process.exitCode = await shell(capsule, o);
    });

  const files = program.command('files').description('move files in and out of capsules');
  files
    .command('cp')
    .description('copy a file to or from a capsule; one side is <capsule-id>:/path, "-" is stdin/stdout')
    .argument('<src>')
    .argument('<dst>')
    .action(async (src: string, dst: string) => {
      await copy(src, dst);
    });

  for (const [name, verb] of [
    ['pause', 'pause'],
    ['resume', 'resume'],
  ] as const) {
    program
      .command(name)
      .description(`${verb} a capsule`)
      .argument('<id>', 'capsule id')
      .option('--json', 'print the capsule as JSON')
      .action(async (id: string, o: { json?: boolean }) => {
        const capsule = Capsule.attach(id);
        const info = name === 'pause' ? await capsule.pause() : await capsule.resume();
        if (o.json) json(info);
        else out(`${info.id} ${info.status}`);
      });
  }

  program
    .command('destroy')
    .alias('kill')
    .description('destroy a capsule')
    .argument('<id>', 'capsule id')
    .action(async (id: string) => {
      // Unknown ids fail here with the API's "capsule … not found".
      const info = await Capsule.getInfo(id);
      if (info.status === 'stopped' || !(await Capsule.attach(id).kill())) {
        throw new CliError(`capsule ${id} is already destroyed`);
      }
      out(`${id} destroyed`);
    });

  const templates = program.command('templates').description('templates capsules are made from');
  templates
    .command('list')
    .alias('ls')
    .description('list templates')
    .addOption(new Option('--type <type>', 'only this kind').choices(['base', 'snapshot']))
    .option('--json', 'print JSON')
    .action(async (o: { type?: 'base' | 'snapshot'; json?: boolean }) => {
      let list;
      try {
        list = await Capsule.listTemplates({ type: o.type });
      } catch (err) {
        if (err instanceof NotFoundError && /no route/i.test(err.message)) {
          throw new CliError('this server does not offer templates yet (GET /v1/snapshots: no such route)');
        }
        throw err;
      }
      if (o.json) return json(list);
      if (list.length === 0) return out('no templates');
      out(
        table(
          ['NAME', 'TYPE', 'VCPUS', 'MEMORY', 'SIZE', 'CREATED'],
          list.map((t) => [
            t.name + (t.platform ? ' (platform)' : ''),
            t.type,
            t.vcpus !== undefined ? String(t.vcpus) : '-',
            t.memoryMb !== undefined ? mib(t.memoryMb) : '-',
            t.sizeBytes !== undefined ? bytes(t.sizeBytes) : '-',
            t.createdAt.toISOString().slice(0, 10),
          ]),
        ),
      );
    });

  return program;
}

interface CreateOpts {
  template?: string;
  vcpus?: number;
  memory?: number;
  disk?: number;
  timeout?: number;
  metadata?: Record<string, string>;
  json?: boolean;
}

interface ExecOpts {
  cwd?: string;
  env?: Record<string, string>;
  user?: string;
  timeout?: number;
}

/** Runs the CLI; resolves with the exit code (the process may still be writing output). */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  // Every command (and subcommand) reports usage errors as one `wrenn: …` line, exit 2.
  const configure = (cmd: Command) => {
    // The command's own options belong after `--`: say so when one is taken for ours.
    const hint = cmd.name() === 'exec' ? ' (give the command after --: wrenn exec <id> -- cmd args…)' : '';
    cmd.exitOverride().configureOutput({
      outputError: (str, write) => {
        const msg = str.replace(/^error: /, '').trim();
        write(`wrenn: ${msg}${/unknown option/.test(msg) ? hint : ''}\n`);
      },
    });
    cmd.commands.forEach(configure);
  };
  configure(program);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version are "errors" to commander; usage errors were already printed.
      return err.exitCode === 0 ? 0 : 2;
    }
    process.stderr.write(`wrenn: ${describeError(err)}\n`);
    return err instanceof CliError ? err.exitCode : 1;
  }
}
