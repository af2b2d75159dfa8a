/**
 * A request body's JSON shape, checked in one pass over its bytes before JSON.parse: nesting
 * deeper than any OpenAI request needs, or one object with a huge number of members, makes
 * JSON.parse (and code walking the result) take long enough to hold the event loop for a second
 * on a 1 MiB body. Such bodies are refused with 400 instead. The scan does not validate the
 * JSON (JSON.parse does that next); it allocates nothing that grows with the body.
 */
import { ApiError } from './openai.js';

/** Deepest nesting of arrays and objects (an OpenAI chat request with text parts needs 5). */
export const MAX_JSON_DEPTH = 32;
/** Most members of one JSON object (OpenAI's largest map, logit_bias, allows 300). */
export const MAX_OBJECT_MEMBERS = 1024;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;

/** Throws a 400 ApiError when the body nests deeper than MAX_JSON_DEPTH or has an object with more than MAX_OBJECT_MEMBERS members. */
export function checkJsonShape(body: Uint8Array): void {
  // Members counted per open container (arrays count nothing).
  const members = new Int32Array(MAX_JSON_DEPTH + 1);
  const isObject = new Uint8Array(MAX_JSON_DEPTH + 1);
  let depth = 0;
  let inString = false;
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
      continue;
    }
    if (c === QUOTE) inString = true;
    else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      if (++depth > MAX_JSON_DEPTH) {
        throw new ApiError(400, `the request body nests arrays and objects more than ${MAX_JSON_DEPTH} deep (at byte ${i})`, null, 'invalid_json');
      }
      members[depth] = 0;
      isObject[depth] = c === OPEN_OBJECT ? 1 : 0;
    } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
      if (depth > 0) depth--;
    } else if (c === COLON && depth > 0 && isObject[depth] === 1 && ++members[depth]! > MAX_OBJECT_MEMBERS) {
      throw new ApiError(400, `an object in the request body has more than ${MAX_OBJECT_MEMBERS} members (at byte ${i})`, null, 'invalid_json');
    }
  }
}
