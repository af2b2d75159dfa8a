import { AirllmError } from '../errors.js';

type ErrorClass = abstract new (...args: never[]) => Error;

/** What {@link checkErrorFamily} found: the error classes (each once) and every rule one breaks. */
export interface ErrorFamilyCheck {
  classes: { name: string; code: unknown }[];
  problems: string[];
}

const CODE = /^AIRLLM_[A-Z0-9_]+$/;

/**
 * The error-family rules over every error class among `modules`' exports (anything whose
 * prototype is an Error's; a class exported by several modules counts once): each extends
 * AirllmError, declares its own static `code` matching /^AIRLLM_[A-Z0-9_]+$/, and no two
 * classes share a code. A class added later is checked without touching the tests.
 */
export function checkErrorFamily(...modules: Record<string, unknown>[]): ErrorFamilyCheck {
  const found = new Map<ErrorClass, string>();
  for (const mod of modules) {
    for (const [name, value] of Object.entries(mod)) {
      if (typeof value === 'function' && (value.prototype instanceof Error || value === Error)) found.set(value as ErrorClass, name);
    }
  }
  const problems: string[] = [];
  const owner = new Map<unknown, string>();
  const classes: ErrorFamilyCheck['classes'] = [];
  for (const [cls, name] of found) {
    const code = (cls as unknown as { code?: unknown }).code;
    classes.push({ name, code });
    if (cls !== AirllmError && !(cls.prototype instanceof AirllmError)) problems.push(`${name} does not extend AirllmError`);
    if (!Object.hasOwn(cls, 'code')) problems.push(`${name} declares no code of its own`);
    if (typeof code !== 'string' || !CODE.test(code)) problems.push(`${name}: code ${String(code)} does not match ${CODE}`);
    const other = owner.get(code);
    if (other !== undefined) problems.push(`${name} and ${other} share the code ${String(code)}`);
    else owner.set(code, name);
  }
  return { classes, problems };
}
