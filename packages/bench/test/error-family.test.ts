import { describe, expect, it } from 'vitest';
import { checkErrorFamily } from '@airllm/format/testing';
import * as api from '../src/index.js';
import * as format from '@airllm/format';
import * as loader from '@airllm/loader';
import * as kernels from '@airllm/kernels';
import * as engine from '@airllm/engine';

describe('the error family', () => {
  it("every error class @airllm/bench exports is an AirllmError with a code of its own, unique beside format, loader, kernels, engine's", () => {
    const { classes, problems } = checkErrorFamily(api, format, loader, kernels, engine);
    expect(problems).toEqual([]);
    expect(classes.map((c) => c.name)).toEqual(expect.arrayContaining(['AirllmError', 'BenchError', 'UsageError', 'ScenarioError']));
  });
});
