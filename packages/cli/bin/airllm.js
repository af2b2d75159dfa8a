#!/usr/bin/env node
// Thin launcher kept in git (and executable) so the `airllm` bin works right after install;
// the command itself is compiled TypeScript in dist/.
import '../dist/main.js';
