#!/usr/bin/env bash
# What a new user does, in a temporary folder with nothing beside the clone (no ../shared):
# `git clone`, then the README's two commands, `npm install && npx airllm generate "Once upon a
# time"` and `npm test`. Also checks that `npm install` and `npm ci` leave the work tree clean.
# It clones the committed state of the current branch.
#
#   scripts/check-fresh-clone.sh [work-dir]   (default: a new temporary folder, removed afterwards)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -gt 0 ]; then
  work=$1
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/airllm-fresh-XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
fail() { echo "check-fresh-clone: $*" >&2; exit 1; }
clean() { [ -z "$(git status --porcelain)" ] || fail "the work tree is not clean after $1: $(git status --porcelain | tr '\n' ' ')"; }

git clone -q "$src" "$work/airllm"
cd "$work/airllm"
[ ! -e ../shared ] || fail "$work/shared exists: this check needs a clone with nothing beside it"
echo "check-fresh-clone: $(git log -1 --format='%h %s' | cut -c1-100) in $work/airllm" >&2

npm install && npx airllm generate "Once upon a time"
clean "npm install"
npm test
clean "npm test"
npm ci >/dev/null
clean "npm ci"
echo "check-fresh-clone: OK" >&2
