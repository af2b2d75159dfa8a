/**
 * The `airllm` program. Commands live in `commands/<name>.ts`, one file per command, each
 * exporting `register(program: Command): void`; this file finds them at start-up, so adding a
 * command touches nothing here. Keep a command module's top level light (import heavy
 * packages inside its action), since every module is loaded for every invocation.
 *
 * Errors from any command end up in one handler: one line `airllm: <message>` on stderr and a
 * non-zero exit code; `--debug` adds the stack; with `--json` the error is also one JSON object
 * on stdout, so a script reading stdout always gets JSON.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { oneLine, reportError, writeJsonError } from './errors.js';

export interface CommandModule {
  register(program: Command): void;
}

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string };
  return pkg.version ?? '0.0.0';
}

async function loadCommands(program: Command): Promise<void> {
  const dir = new URL('./commands/', import.meta.url);
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.js'))
    .sort();
  for (const file of files) {
    const mod = (await import(new URL(file, dir).href)) as Partial<CommandModule>;
    if (typeof mod.register !== 'function') {
      throw new Error(`command module commands/${file} does not export register(program)`);
    }
    mod.register(program);
  }
}

export async function main(argv: readonly string[]): Promise<number> {
  // Options after `--` are arguments (a prompt may say --json).
  const options = argv.includes('--') ? argv.slice(0, argv.indexOf('--')) : argv;
  const debug = options.includes('--debug');
  const json = options.includes('--json');
  const program = new Command();
  program
    .name('airllm')
    .description('Run large language models layer by layer from Distributed-Llama .m files')
    .version(packageVersion(), '-V, --version')
    .option('--debug', 'print stack traces with errors')
    // Commander's own usage errors get the same one-line `airllm:` form as ours.
    .configureOutput({
      outputError: (str, write) => {
        const message = oneLine(str.replace(/^error: /, ''));
        write(`airllm: ${message}\n`);
        if (json) writeJsonError('AIRLLM_USAGE', message);
      },
    })
    .exitOverride();
  try {
    await loadCommands(program);
    await program.parseAsync([...argv]);
    return 0;
  } catch (e) {
    // Already printed by commander (usage error), or help/version output (exit code 0).
    if (e instanceof CommanderError) return e.exitCode;
    return reportError(e, { debug, json });
  }
}

// A reader that goes away (`airllm inspect --json x.m | head`) is not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});

const code = await main(process.argv);
// Keep an exit code a command set itself (e.g. a check that failed after printing).
if (code !== 0) process.exitCode = code;
