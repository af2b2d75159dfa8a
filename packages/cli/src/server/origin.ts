/**
 * Which web pages may talk to the server. A local server is reachable from every page the user
 * opens in a browser, so, like Jupyter and Vite:
 *
 * - the Host header must name this server (the address it listens on, localhost, 127.0.0.1,
 *   [::1], one of this machine's addresses when it listens on every interface, or a name allowed
 *   with `allowedHosts`): a DNS-rebinding page reaches 127.0.0.1 under its own name and is
 *   refused;
 * - a request with an Origin header must come from the page the server serves itself (same
 *   origin) or from an origin allowed with `corsOrigins`, which also get CORS headers and answers
 *   to their preflights. Browsers send Origin with every POST, so another site's page can neither
 *   run generation (even with a "simple" text/plain POST) nor read an answer.
 *
 * Clients that are not browsers (curl, the openai package) send no Origin and pass.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { networkInterfaces } from 'node:os';
import { ApiError } from './openai.js';

export interface OriginPolicyOptions {
  /** Host names accepted besides the built-in ones; `.example.com` also accepts its subdomains, `*` any host. */
  allowedHosts?: readonly string[];
  /** Origins (`https://app.example.com`) allowed to call the API from a browser; `*` allows any. */
  corsOrigins?: readonly string[];
}

const PREFLIGHT_MAX_AGE_S = '600';
const ALLOWED_METHODS = 'GET, HEAD, POST';
const ALLOWED_HEADERS = 'authorization, content-type';
/** Visible ASCII, spaces and commas: what an origin or a list of header names consists of. */
const TOKEN_LIST = /^[\x21-\x7e ,]*$/;

/**
 * A request checker for the router: refuses a foreign Host or Origin with 403 (an ApiError),
 * adds CORS headers for allowed cross-origin requests and answers their preflights (returns true
 * when it answered). `boundAddress` is the address the server listens on (undefined before).
 */
export function originPolicy(options: OriginPolicyOptions, boundAddress: () => string | undefined): (req: IncomingMessage, res: ServerResponse) => boolean {
  const hosts = (options.allowedHosts ?? []).map((h) => h.trim().toLowerCase()).filter((h) => h !== '');
  const anyHost = hosts.includes('*');
  const origins = new Set((options.corsOrigins ?? []).map((o) => (o.trim() === '*' ? '*' : normalizeOrigin(o))));
  const anyOrigin = origins.has('*');

  const hostAllowed = (name: string): boolean => {
    if (anyHost || name === 'localhost' || name.endsWith('.localhost') || name === '127.0.0.1' || name === '[::1]') return true;
    if (hosts.some((h) => name === h || (h.startsWith('.') && (name.endsWith(h) || name === h.slice(1))))) return true;
    const bound = boundAddress();
    if (bound === undefined) return false;
    if (name === bracket(bound)) return true;
    // Listening on every interface: any address of this machine names it.
    if (bound === '0.0.0.0' || bound === '::') {
      return Object.values(networkInterfaces()).some((list) => list?.some((i) => bracket(i.address) === name));
    }
    return false;
  };

  return (req, res) => {
    const host = req.headers.host;
    // HTTP/1.0 may omit Host (node refuses an HTTP/1.1 request without one); browsers always send it.
    let hostOrigin: string | undefined;
    if (host !== undefined) {
      let name: string;
      try {
        const u = new URL(`http://${host}`);
        // A fully qualified name may end in a dot ("localhost."): the same name.
        name = u.hostname.replace(/\.$/, '');
        hostOrigin = u.origin;
      } catch {
        throw new ApiError(400, `the Host header "${host.slice(0, 100)}" is not a valid host`, null, 'invalid_host');
      }
      if (!hostAllowed(name)) {
        throw new ApiError(403, `the Host "${name.slice(0, 100)}" is not this server's name; start the server with --allowed-hosts ${name.slice(0, 100)} to accept it`, null, 'forbidden_host', 'permission_error');
      }
    }
    const origin = req.headers.origin;
    if (origin === undefined) return false;
    const o = normalizeOrigin(origin);
    if (o === hostOrigin) return false;
    if (!anyOrigin && !origins.has(o)) {
      throw new ApiError(403, `cross-origin request from ${origin.slice(0, 100)} refused; start the server with --cors-origin ${origin.slice(0, 100)} to allow it`, null, 'forbidden_origin', 'permission_error');
    }
    // Only plain visible ASCII is reflected into response headers (never arbitrary bytes a
    // client sent).
    res.setHeader('access-control-allow-origin', TOKEN_LIST.test(origin) ? origin : o);
    res.setHeader('vary', 'Origin');
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined) {
      const asked = req.headers['access-control-request-headers'];
      res.writeHead(204, {
        'access-control-allow-methods': ALLOWED_METHODS,
        'access-control-allow-headers': asked !== undefined && TOKEN_LIST.test(asked) ? asked : ALLOWED_HEADERS,
        'access-control-max-age': PREFLIGHT_MAX_AGE_S,
        'content-length': 0,
      });
      res.end();
      return true;
    }
    return false;
  };
}

/** `scheme://host[:port]` as browsers send it (lower case, default port left out); unparsable origins ("null") stay as they are. */
function normalizeOrigin(origin: string): string {
  try {
    const u = new URL(origin.trim());
    return u.origin === 'null' ? origin.trim() : u.origin;
  } catch {
    return origin.trim();
  }
}

function bracket(address: string): string {
  return address.includes(':') ? `[${address}]` : address;
}
