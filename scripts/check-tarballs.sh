#!/usr/bin/env bash
# Installs the packages as a user would get them from the registry: `npm pack` of every
# workspace, then `npm install <the tarballs>` into an empty folder outside the repository (no
# workspace, no repository files within reach). Checks that
#   - each tarball holds LICENSE and README.md, and no tests, benchmarks or test builders;
#   - the native addons build from the packages' own files during that install;
#   - `npx airllm generate "Once upon a time"` prints the story the repository's CLI prints;
#   - a script there can import every package and run @airllm/engine on the bundled model.
# Needs a built repository (npm ci builds it). Third-party dependencies come from the registry.
#
#   scripts/check-tarballs.sh [work-dir]     (default: a new temporary folder, removed afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
if [ $# -gt 0 ]; then
  work=$1
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/airllm-tarballs-XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
fail() { echo "check-tarballs: $*" >&2; exit 1; }

# The two native packages each carry the addon build script; one copy must not drift from the other.
cmp -s packages/kernels/scripts/build-addon.cjs packages/loader/scripts/build-addon.cjs ||
  fail "packages/kernels/scripts/build-addon.cjs and packages/loader/scripts/build-addon.cjs differ"

echo "check-tarballs: packing into $work/tarballs" >&2
mkdir -p "$work/tarballs"
npm pack --workspaces --pack-destination "$work/tarballs" --loglevel=warn >/dev/null
for t in "$work"/tarballs/*.tgz; do
  list=$(tar -tzf "$t")
  for must in package/LICENSE package/README.md package/package.json; do
    grep -qx "$must" <<<"$list" || fail "$(basename "$t") lacks ${must#package/}"
  done
  deny='^package/(test|bench|src|dist-bench|check)/|^package/native/check/|\.tsbuildinfo$|\.map$'
  # @airllm/format/testing and @airllm/loader/testing are deliberate subpaths (other packages'
  # tests build models and run a fake hub with them).
  case "$(basename "$t")" in airllm-format-* | airllm-loader-*) ;; *) deny+='|^package/dist/testing/' ;; esac
  bad=$(grep -E "$deny" <<<"$list" || true)
  [ -z "$bad" ] || fail "$(basename "$t") ships files that are not for users: $(tr '\n' ' ' <<<"$bad")"
done
ls "$work/tarballs" >&2

app="$work/app"
rm -rf "$app"
mkdir -p "$app"
cd "$app"
npm init -y >/dev/null
# A failed addon build fails the install here (it only warns for users).
AIRLLM_REQUIRE_NATIVE=1 npm install --no-audit --no-fund "$work"/tarballs/*.tgz >&2

cat >check.mjs <<'EOF'
// Runs from the install folder: every package resolves, both addons load, and the engine
// generates from the bundled model.
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
for (const p of ['format', 'loader', 'kernels', 'engine', 'distributed', 'bench', 'cli']) await import(`@airllm/${p}`);
const { nativePaths } = await import('@airllm/kernels');
const { nativeAddon } = await import('@airllm/loader');
if (nativeAddon() === undefined) throw new Error('the mmap addon of @airllm/loader did not build');
const paths = nativePaths();
const { LayerWiseInferenceEngine } = await import('@airllm/engine');
const models = fileURLToPath(new URL('./node_modules/@airllm/cli/models/', import.meta.url));
const engine = new LayerWiseInferenceEngine(models + 'stories260K.m', { tokenizerPath: models + 'stories260K.t', threads: 1 });
await engine.initialize();
let text = '';
for await (const t of engine.generate('Once upon a time', { maxTokens: 20, temperature: 0 })) text += t.text;
await engine.cleanup();
console.log(JSON.stringify({ kernels: paths, models: readdirSync(models), text }));
EOF
node check.mjs >check.json || fail "the import/engine check failed"
echo "check-tarballs: $(cat check.json)" >&2

got=$(npx --no-install airllm generate "Once upon a time")
want=$(node "$repo/packages/cli/bin/airllm.js" generate "Once upon a time")
[ "$got" = "$want" ] || fail "npx airllm generate printed something else than the repository's CLI:
--- installed
$got
--- repository
$want"
case "$got" in "Once upon a time"?*) ;; *) fail "npx airllm generate printed no story: $got" ;; esac
echo "$got"
echo "check-tarballs: OK (7 packages installed from tarballs in $app)" >&2
