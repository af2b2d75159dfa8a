/**
 * CLI-level errors and the one-line error report shared by every command. Library errors
 * (`FormatError` and friends) already carry what and where in their message; the CLI only
 * prefixes `airllm:` and keeps it on one line.
 */

/** An error meant for the user as is (bad arguments, a check that failed), with an exit code. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'CliError';
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
  if (debug && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
  return exitCodeOf(e);
}
