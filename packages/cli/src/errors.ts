import { AirllmError } from '@airllm/format';

/**
 * CLI-level errors and the one-line error report shared by every command. Library errors
 * (`AirllmError`s) already carry what and where in their message; the CLI only prefixes
 * `airllm:` and keeps it on one line (`--debug` adds the code and the stack).
 */

/** An error meant for the user as is (bad arguments, a check that failed), with an exit code. */
export class CliError extends AirllmError {
  static override readonly code = 'AIRLLM_CLI';
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message, { exitCode });
    this.exitCode = exitCode;
  }
}

/** One line: newlines inside the message (e.g. commander's "Did you mean") become spaces. */
export function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

export function errorMessage(e: unknown): string {
  if (e instanceof Error) return oneLine(e.message || e.name);
  return oneLine(String(e));
}

export function exitCodeOf(e: unknown): number {
  const code = (e as { exitCode?: unknown } | null)?.exitCode;
  return typeof code === 'number' && Number.isInteger(code) && code > 0 ? code : 1;
}

/**
 * Print `airllm: <message>` on stderr (the stack only with --debug) and return the exit code.
 */
export function reportError(e: unknown, debug: boolean): number {
  process.stderr.write(`airllm: ${errorMessage(e)}\n`);
  if (debug && e instanceof AirllmError) process.stderr.write(`code ${e.code} ${JSON.stringify(e.details)}\n`);
  if (debug && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
  return exitCodeOf(e);
}
