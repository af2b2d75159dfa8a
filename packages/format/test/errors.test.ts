import { mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as convert from '../src/convert.js';
import * as format from '../src/index.js';
import { checkErrorFamily } from '../src/testing/index.js';
import { tempDir } from './helpers.js';

const { AirllmError, FormatError, InvalidValueError, FileAccessError, MissingFileError, NotRegularFileError, PermissionError, EmptyFileError, IoError, fileError } = format;

const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe('the error family', () => {
  it("every error class format and format/convert export is an AirllmError with a code of its own", () => {
    const { classes, problems } = checkErrorFamily(format, convert);
    expect(problems).toEqual([]);
    expect(classes.map((c) => c.name)).toEqual(expect.arrayContaining(['AirllmError', 'FormatError', 'UnsupportedModelError', 'MissingTensorError', 'FileAccessError']));
  });

  it('the check names a class outside the family, one without a code and two sharing one', () => {
    class Plain extends Error {}
    class NoCode extends FormatError {}
    class Twin extends FormatError {
      static override readonly code = 'AIRLLM_FORMAT';
    }
    class Lower extends FormatError {
      static override readonly code = 'airllm_lower';
    }
    const { problems } = checkErrorFamily({ FormatError, Plain, NoCode, Twin, Lower });
    expect(problems).toEqual([
      'Plain does not extend AirllmError',
      'Plain declares no code of its own',
      'Plain: code undefined does not match /^AIRLLM_[A-Z0-9_]+$/',
      'NoCode declares no code of its own',
      'NoCode and FormatError share the code AIRLLM_FORMAT',
      'Twin and FormatError share the code AIRLLM_FORMAT',
      'Lower: code airllm_lower does not match /^AIRLLM_[A-Z0-9_]+$/',
    ]);
  });

  it('an instance carries its class code, its details and a one-line message naming where', () => {
    const e = new InvalidValueError('value out of range', { path: '/m.m', field: 'dim', offset: 12, expected: '> 0', actual: 0, extra: 'kept' });
    expect(e).toBeInstanceOf(AirllmError);
    expect(e.code).toBe('AIRLLM_INVALID_VALUE');
    expect(e.name).toBe('InvalidValueError');
    expect(e.message).toBe('/m.m, field dim, byte offset 12: value out of range (expected > 0, got 0)');
    expect(e.reason).toBe('value out of range');
    expect(e.details).toEqual({ path: '/m.m', field: 'dim', offset: 12, expected: '> 0', actual: 0, extra: 'kept' });
    expect(Object.isFrozen(e.details)).toBe(true);
    expect(new FormatError('plain', { field: undefined }).details).toEqual({});
    const withPath = new InvalidValueError('bad', { field: 'x' }).withPath('/a');
    expect(withPath).toBeInstanceOf(InvalidValueError);
    expect(withPath.message).toBe('/a, field x: bad');
    expect(withPath.withPath('/b').path).toBe('/a');
  });

  it('withPath keeps the class, its own fields and the cause of a class with its own constructor', () => {
    class Counted extends AirllmError {
      static override readonly code = 'AIRLLM_TEST_COUNTED';
      constructor(readonly n: number, options?: ErrorOptions) {
        super(`${n} too many`, { n }, options);
      }
    }
    const cause = new Error('root');
    const e = new Counted(3, { cause }).withPath('/f');
    expect(e).toBeInstanceOf(Counted);
    expect(e.n).toBe(3);
    expect(e.cause).toBe(cause);
    expect(e.code).toBe('AIRLLM_TEST_COUNTED');
    expect(e.message).toBe('/f: 3 too many');
    expect(e.details).toEqual({ n: 3, path: '/f' });
    expect(e.stack?.split('\n')[0]).toBe('Counted: /f: 3 too many');
  });
});

describe('fileError: the one errno mapping', () => {
  const thrown = (f: () => unknown): unknown => {
    try {
      f();
    } catch (e) {
      return e;
    }
    throw new Error('expected a throw');
  };

  it('maps real fs failures', () => {
    const missing = fileError(thrown(() => openSync(join(tmp.dir, 'nope'), 'r')), '/p');
    expect(missing).toBeInstanceOf(MissingFileError);
    expect(missing.message).toBe('/p: no such file');
    const dir = join(tmp.dir, 'd');
    mkdirSync(dir);
    const isDir = fileError(thrown(() => openSync(dir, 'w')), dir, 'open');
    expect(isDir).toBeInstanceOf(NotRegularFileError);
    expect(isDir.message).toBe(`${dir}: cannot open: is a directory, not a file`);
  });

  it('maps each errno name to its class (permission cannot be provoked as root)', () => {
    const err = (code: string): unknown => fileError(Object.assign(new Error(`${code}: message`), { code }), '/x');
    expect(err('EACCES')).toBeInstanceOf(PermissionError);
    expect(err('EPERM')).toBeInstanceOf(PermissionError);
    expect(err('ENOTDIR')).toBeInstanceOf(MissingFileError);
    expect(err('ENOTREG')).toBeInstanceOf(NotRegularFileError);
    expect(err('EEMPTY')).toBeInstanceOf(EmptyFileError);
    const io = err('EIO') as InstanceType<typeof IoError>;
    expect(io).toBeInstanceOf(IoError);
    expect(io).toBeInstanceOf(FileAccessError);
    expect(io.actual).toBe('EIO');
    const known = new InvalidValueError('bad header', { field: 'dim' });
    expect(fileError(known, '/m').message).toBe('/m, field dim: bad header');
  });
});
