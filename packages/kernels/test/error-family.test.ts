import { describe, expect, it } from 'vitest';
import { checkErrorFamily } from '@airllm/format/testing';
import * as api from '../src/index.js';
import * as format from '@airllm/format';

describe('the error family', () => {
  it("every error class @airllm/kernels exports is an AirllmError with a code of its own, unique beside format's", () => {
    const { classes, problems } = checkErrorFamily(api, format);
    expect(problems).toEqual([]);
    expect(classes.map((c) => c.name)).toEqual(expect.arrayContaining(['AirllmError', 'KernelError', 'NativeUnavailableError']));
  });
});
