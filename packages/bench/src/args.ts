import { defaultOptions, type BenchOptions } from './bench.js';
import { UsageError } from './errors.js';
import { defaultPeerDir } from './peer.js';
import { PEER_VARIANTS, type PeerVariant } from './protocol.js';
import { isShapeName, type ShapeName } from './shapes.js';

export const USAGE = `airllm benchmark: airllm against the hardware limits and llama.cpp, side by side

  node packages/bench/dist/main.js [--quick] [--shape 7b|tinyllama|70b|mini]... [--json] [options]
  npm run bench -- [same options]

  --quick              small model, few tokens (under 2 minutes; what CI runs)
  --shape NAME         tinyllama, 7b, 70b (~38 GB, only on request) or mini; repeat or comma-separate
                       (default: tinyllama,7b; with --quick: mini)
  --json               print the JSON report on stdout (progress goes to stderr)
  --no-peer            skip llama.cpp (no node-llama-cpp install)
  --peer-dir DIR       where node-llama-cpp is installed (default ~/.cache/airllm-bench/node-llama-cpp)
  --peer-variants LIST llama.cpp load variants: default,lazy,nommap (default: default)
  --threads N          compute threads for both engines (default 2)
  --activations f32|q80  airllm activation numerics (default q80, llama.cpp's Q8_0 activations)
  --runs N             timed runs per scenario (default 5; quick 2)
  --prompt N           prompt tokens (default 32; quick 8)
  --decode N           decoded tokens (default 16; quick 6)
  --stream-steps N     decode steps of the streaming scenarios (default 5; quick 3)
  --out DIR            results folder (default <repo>/results); the run writes DIR/bench-<time>/
  --dir DIR            scratch folder for the model files (default the OS temp dir)
  --seed N             weights and prompts seed (default 1)
  --quiet-wait S       before timed work, wait up to S seconds for other work on the machine to
                       stop (CPUs ≤ 15% busy; default 90, quick 2; 0: do not wait)
  --auto-only          only the automatic memory plan's scenario: auto mode with no memory flags
                       (models larger than memory; 70b) or --max-memory half the model (the others),
                       cold, against read(2) of the same file
  --verbose            pass the scenario processes' own output through
  -h, --help           this text`;

export interface ParsedArgs {
  readonly help: boolean;
  readonly json: boolean;
  readonly options: Omit<BenchOptions, 'log' | 'resultsDir'> & { resultsDir: string | undefined };
}

export function parseArgs(argv: readonly string[]): ParsedArgs {
  const quick = argv.includes('--quick');
  type Mutable<T> = { -readonly [K in keyof T]: T[K] };
  const o: Mutable<ParsedArgs['options']> = { ...defaultOptions(quick), peerDir: defaultPeerDir(), resultsDir: undefined };
  let shapes: ShapeName[] | undefined;
  let json = false;
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`${a} needs a value`);
      return v;
    };
    const int = (min: number): number => {
      const v = value();
      const n = Number(v);
      if (!Number.isInteger(n) || n < min) throw new UsageError(`${a} needs a whole number ≥ ${min}, got ${v}`);
      return n;
    };
    switch (a) {
      case '--':
      case '--quick':
        break;
      case '-h':
      case '--help':
        help = true;
        break;
      case '--json':
        json = true;
        break;
      case '--no-peer':
        o.peer = false;
        break;
      case '--verbose':
        o.verbose = true;
        break;
      case '--auto-only':
        o.autoOnly = true;
        break;
      case '--shape':
        for (const s of value().split(',')) {
          if (!isShapeName(s)) throw new UsageError(`unknown shape '${s}' (tinyllama, 7b, 70b, mini)`);
          (shapes ??= []).push(s);
        }
        break;
      case '--peer-dir':
        o.peerDir = value();
        break;
      case '--peer-variants': {
        const vs = value().split(',');
        for (const v of vs) if (!(PEER_VARIANTS as readonly string[]).includes(v)) throw new UsageError(`unknown llama.cpp variant '${v}' (${PEER_VARIANTS.join(', ')})`);
        o.peerVariants = [...new Set(vs)] as PeerVariant[];
        break;
      }
      case '--threads':
        o.threads = int(1);
        break;
      case '--activations': {
        const v = value();
        if (v !== 'f32' && v !== 'q80') throw new UsageError(`--activations must be f32 or q80, got ${v}`);
        o.activations = v;
        break;
      }
      case '--runs':
        o.runs = int(1);
        break;
      case '--prompt':
        o.promptTokens = int(1);
        break;
      case '--decode':
        o.decodeTokens = int(2);
        break;
      case '--stream-steps':
        o.streamSteps = int(1);
        break;
      case '--out':
        o.resultsDir = value();
        break;
      case '--dir':
        o.tmpDir = value();
        break;
      case '--seed':
        o.seed = int(0);
        break;
      case '--quiet-wait':
        o.quietMaxWaitSeconds = int(0);
        break;
      default:
        throw new UsageError(`unknown argument '${a}' (see --help)`);
    }
  }
  if (shapes) o.shapes = [...new Set(shapes)];
  return { help, json, options: o };
}
