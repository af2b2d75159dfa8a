import { describe, expect, it } from 'vitest';
import * as distributed from '@airllm/distributed';
import * as engine from '@airllm/engine';
import * as format from '@airllm/format';
import { checkErrorFamily } from '@airllm/format/testing';
import * as kernels from '@airllm/kernels';
import * as loader from '@airllm/loader';
import * as cli from '../src/index.js';
import * as cliErrors from '../src/errors.js';
import * as queue from '../src/server/queue.js';
import { ApiError } from '../src/server/openai.js';

describe('the error family', () => {
  it("the CLI's errors and every library package's are AirllmErrors with codes of their own", () => {
    const { classes, problems } = checkErrorFamily(cli, cliErrors, queue, format, loader, kernels, engine, distributed);
    expect(problems).toEqual([]);
    expect(classes.map((c) => c.name)).toEqual(expect.arrayContaining(['ApiError', 'CliError', 'QueueFullError', 'FormatError', 'LoaderError', 'KernelError', 'EngineError', 'DistributedError']));
  });

  it("an API error keeps OpenAI's error code apart from its own", () => {
    const e = new ApiError(400, 'too long', 'messages', 'context_length_exceeded');
    expect(e.code).toBe('AIRLLM_API');
    expect(e.body()).toEqual({ error: { message: 'too long', type: 'invalid_request_error', param: 'messages', code: 'context_length_exceeded' } });
  });
});
