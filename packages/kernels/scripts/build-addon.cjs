#!/usr/bin/env node
// Builds the native addon of the package in the current directory (an npm `install` script),
// from source, without downloading anything.
//
//   node scripts/build-addon.cjs "<what the addon is>" "<what happens without it>"
//
// @airllm/kernels and @airllm/loader each ship an identical copy, so that each builds from its
// own files when installed from the registry (scripts/check-tarballs.sh checks they are equal).
//
// node-gyp would fetch Node's headers from the network unless told where they are. npm passes
// its `nodedir` setting as npm_config_nodedir; when that is unset we look for the headers that
// ship with this Node (<prefix>/include/node/node.h) and pass them explicitly.
//
// A failed build does not fail the install: the package falls back to its JavaScript path and
// says so once on stderr at run time. Set AIRLLM_REQUIRE_NATIVE=1 to make a failed build fail
// the install (CI on supported machines).
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync, readFileSync } = require('node:fs');
const path = require('node:path');

const [what = 'native addon', fallback = 'a JavaScript fallback will be used'] = process.argv.slice(2);
const pkg = JSON.parse(readFileSync(path.join(process.cwd(), 'package.json'), 'utf8')).name;

function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
  ];
  for (const c of candidates) if (c && existsSync(c)) return c;
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    return undefined;
  }
}

function findNodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (existsSync(path.join(prefix, 'include/node/node.h'))) return prefix;
  return undefined;
}

const gyp = findNodeGyp();
const nodedir = findNodeDir();
let ok = false;
let why = '';
if (!gyp) why = 'node-gyp not found';
else if (!nodedir) why = "Node's headers not found (set npm's nodedir)";
else {
  const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`], { cwd: process.cwd(), stdio: 'inherit' });
  ok = r.status === 0;
  if (!ok) why = `node-gyp exited with ${r.status ?? r.signal}`;
}
if (!ok) {
  console.error(`${pkg}: ${what} not built (${why}); ${fallback}`);
  if (process.env.AIRLLM_REQUIRE_NATIVE === '1') process.exit(1);
}
