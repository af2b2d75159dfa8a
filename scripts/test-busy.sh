#!/usr/bin/env bash
# Runs `npm test` while busy-loop processes compete for the CPUs (default: 2, one per core of the
# CI machine), to show that no test depends on the machine's speed. The loops are ended when the
# tests end, also on failure or Ctrl-C.
#
#   scripts/test-busy.sh [loops] [-- extra npm test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
loops=${1:-2}
shift || true
[ "${1:-}" = "--" ] && shift
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop EXIT
for _ in $(seq "$loops"); do
  node -e 'for (;;) {}' &
  pids+=($!)
done
echo "test-busy: ${#pids[@]} busy loops running (pids ${pids[*]})" >&2
npm test "$@"
