import { AirllmError } from '@airllm/format';
import { formatBytes, wroteJson } from './output.js';

/**
 * CLI-level errors and the one-line error report shared by every command. Library errors
 * (`AirllmError`s) already carry what and where in their message; the CLI prefixes `airllm:`,
 * keeps it on one line, and names the flags a user types where the libraries name their own
 * options (`tokenizerPath` → `-t/--tokenizer`, byte counts → sizes); `--debug` adds the code and
 * the stack. With `--json` the error is also one JSON object on stdout, `{"error": {"code",
 * "message"}}`.
 */

/** An error meant for the user as is (bad arguments, a check that failed), with an exit code. */
export class CliError extends AirllmError {
  static override readonly code = 'AIRLLM_CLI';
  readonly exitCode: number;
  /** AIRLLM_USAGE for bad arguments (exit code 2), AIRLLM_CLI or a more specific code otherwise. */
  override readonly code: string;
  constructor(message: string, exitCode = 1, code = exitCode === 2 ? 'AIRLLM_USAGE' : CliError.code) {
    super(message, { exitCode });
    this.exitCode = exitCode;
    this.code = code;
  }
}

/** Library option and field names → the flags that set them. */
const FLAGS: Record<string, string> = {
  tokenizerPath: '-t/--tokenizer',
  overwrite: '--overwrite',
  budgetBytes: '--max-memory',
  maxMemory: '--max-memory',
  mode: '--mode',
  threads: '--threads',
  activations: '--activations',
  kernels: '--kernels',
  maxSeqLen: '--max-seq-len',
  batchSize: '--batch-size',
  maxSequences: '--parallel',
  maxTokens: '--steps',
  temperature: '--temperature',
  topK: '--top-k',
  topP: '--top-p',
  seed: '--seed',
  draft: '--draft',
  draftMax: '--draft-max',
};
/** Of those, the ones whose values are byte counts, shown as sizes. */
const BYTE_OPTIONS = new Set(['budgetBytes', 'maxMemory']);

/** The option or field a library error names (engine `OptionError.option`, format `field`). */
function optionOf(e: Error): string | undefined {
  const x = e as { option?: unknown; field?: unknown };
  const name = typeof x.option === 'string' ? x.option : x.field;
  return typeof name === 'string' ? name : undefined;
}

/** A library error's message in the CLI's terms: its flags, and sizes instead of byte counts. */
function inCliTerms(e: Error, message: string): string {
  let text = message.replace(/\bpass (\w+)\b/g, (m, name: string) => (FLAGS[name] ? `pass ${FLAGS[name]}` : m));
  const name = optionOf(e);
  const flag = name === undefined ? undefined : FLAGS[name];
  if (name === undefined || flag === undefined) return text;
  text = text.replace(`option ${name}:`, `${flag}:`).replace(`field ${name}`, flag);
  if (BYTE_OPTIONS.has(name)) {
    text = text.replace(/\b(\d+)(\+?) bytes\b/g, (_, n: string, plus: string) => `${formatBytes(Number(n))}${plus}`);
    text = text.replace(/(≥ |got )(\d+)\b/g, (_, what: string, n: string) => `${what}${formatBytes(Number(n))}`);
  }
  return text;
}

/** One line: newlines inside the message (e.g. commander's "Did you mean") become spaces. */
export function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

export function errorMessage(e: unknown): string {
  if (e instanceof Error) return oneLine(inCliTerms(e, e.message || e.name));
  return oneLine(String(e));
}

export function exitCodeOf(e: unknown): number {
  const code = (e as { exitCode?: unknown } | null)?.exitCode;
  return typeof code === 'number' && Number.isInteger(code) && code > 0 ? code : 1;
}

/** The error's stable code: the libraries' AIRLLM_* codes, system errors' own (ENOENT…). */
export function errorCode(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code !== '' ? code : 'AIRLLM_ERROR';
}

/** The `error` member of a JSON document for `e`. */
export function jsonError(e: unknown): { code: string; message: string } {
  return { code: errorCode(e), message: errorMessage(e) };
}

/**
 * Print `airllm: <message>` on stderr (the stack only with --debug) and, with --json, the same
 * error as one JSON object on stdout (unless the command printed its document already, with the
 * error in it); return the exit code.
 */
export function reportError(e: unknown, options: { debug: boolean; json: boolean }): number {
  const message = errorMessage(e);
  process.stderr.write(`airllm: ${message}\n`);
  if (options.debug && e instanceof AirllmError) process.stderr.write(`code ${e.code} ${JSON.stringify(e.details)}\n`);
  if (options.debug && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
  if (options.json && !wroteJson()) writeJsonError(errorCode(e), message);
  return exitCodeOf(e);
}

export function writeJsonError(code: string, message: string): void {
  process.stdout.write(`${JSON.stringify({ error: { code, message } })}\n`);
}
