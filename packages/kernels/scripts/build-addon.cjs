#!/usr/bin/env node
// Builds the native kernels addon (build/Release/airllm_kernels.node) at install time, from
// source, without downloading anything: node-gyp is told where this Node's headers are
// (npm's `nodedir` setting, or <prefix>/include/node next to the running node).
//
// A failed build does not fail the install: @airllm/kernels then runs on its TypeScript
// reference backend and says so once on stderr. Set AIRLLM_REQUIRE_NATIVE=1 to make a failed
// build fail the install (CI on supported machines).
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const path = require('node:path');

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
  if (existsSync(path.join(prefix, 'include/node/node_api.h'))) return prefix;
  return undefined;
}

const gyp = findNodeGyp();
const nodedir = findNodeDir();
let ok = false;
let why = '';
if (!gyp) why = 'node-gyp not found';
else if (!nodedir) why = "Node's headers not found (set npm's nodedir)";
else {
  const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`], {
    cwd: path.resolve(__dirname, '..'),
    stdio: 'inherit',
  });
  ok = r.status === 0;
  if (!ok) why = `node-gyp exited with ${r.status ?? r.signal}`;
}
if (!ok) {
  console.error(`@airllm/kernels: native addon not built (${why}); the TypeScript reference backend will be used`);
  if (process.env.AIRLLM_REQUIRE_NATIVE === '1') process.exit(1);
}
