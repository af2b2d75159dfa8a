#!/usr/bin/env node
/**
 * `npm run bench` / `node packages/bench/dist/main.js`: see args.ts for the options. Prints the
 * table (or the JSON report with --json) and writes report.md, report.json, the timelines and
 * the Chrome traces to <repo>/results/bench-<time>/.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, USAGE } from './args.js';
import { runBench } from './bench.js';
import { BenchError } from './errors.js';

/** The monorepo root (the package.json with workspaces above this file), else the cwd. */
function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const p = join(d, 'package.json');
    if (existsSync(p)) {
      try {
        if ((JSON.parse(readFileSync(p, 'utf8')) as { workspaces?: unknown }).workspaces) return d;
      } catch {
        // keep looking
      }
    }
    const up = dirname(d);
    if (up === d) return process.cwd();
    d = up;
  }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.help) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const log = (line: string): void => void (args.json ? process.stderr : process.stdout).write(line + '\n');
  const out = await runBench({ ...args.options, resultsDir: resolve(args.options.resultsDir ?? join(repoRoot(), 'results')), log });
  if (args.json) process.stdout.write(JSON.stringify(out.report) + '\n');
  else {
    log('');
    log(out.table);
    log('');
    log(`report: ${join(out.dir, 'report.md')} (JSON: report.json; timelines: ${out.report.shapes.flatMap((s) => s.timelines.map((t) => t.svg)).join(', ')})`);
  }
}

main().catch((e: unknown) => {
  const err = e instanceof Error ? e : new Error(String(e));
  process.stderr.write(`airllm bench: ${err instanceof BenchError ? err.message : err.stack ?? err.message}\n`);
  process.exitCode = 1;
});
