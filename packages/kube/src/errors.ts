import { ApiException } from '@kubernetes/client-node';
import { ConflictError, NotFoundError, PluglineError, TransientError } from '@plugline/contracts';

/** A create found an object of that name already there (HTTP 409, reason `AlreadyExists`). */
export class AlreadyExistsError extends PluglineError {
  override name = 'AlreadyExistsError';
  constructor(message: string, options?: ErrorOptions) {
    super('AlreadyExists', message, options);
  }
}

/**
 * The API server refused a request for a reason retrying cannot fix (400, 401, 403, 405, 415,
 * a 422 that is a validation failure, ...). `reason` is the Kubernetes Status reason when known.
 */
export class KubeApiError extends PluglineError {
  override name = 'KubeApiError';
  constructor(
    /** HTTP status code of the answer. */
    readonly code: number,
    reason: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(reason, message, options);
  }
}

/** An informer was stopped before its first list succeeded. */
export class InformerStoppedError extends PluglineError {
  override name = 'InformerStoppedError';
  constructor(message: string, options?: ErrorOptions) {
    super('InformerStopped', message, options);
  }
}

/** The body of a Kubernetes `Status` answer, as far as the mapping needs it. */
interface StatusBody {
  reason?: string;
  message?: string;
}

function parseStatus(body: unknown): StatusBody {
  if (typeof body === 'string') {
    try {
      const parsed: unknown = JSON.parse(body);
      return typeof parsed === 'object' && parsed !== null ? parsed : {};
    } catch {
      return { message: body };
    }
  }
  return typeof body === 'object' && body !== null ? body : {};
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  // A connection the kernel tore down (`ss -K`, a firewall's reset): read ECONNABORTED.
  'ECONNABORTED',
  'ENETRESET',
  'ENETDOWN',
  'EHOSTDOWN',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ENOTFOUND',
  'UND_ERR_SOCKET',
]);

/** The socket calls whose failures Node reports as system errors (`read ECONNABORTED`). */
const SOCKET_CALLS = new Set(['connect', 'read', 'write', 'getaddrinfo']);

/**
 * True for failures of the transport rather than answers of the server. Node's http client
 * passes the socket's system error on as it is (node-fetch wrapped every one in a FetchError),
 * so any error of a socket call counts, whatever its errno.
 */
function isNetworkError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const { code, syscall } = err as { code?: unknown; syscall?: unknown };
  if (typeof code === 'string' && NETWORK_CODES.has(code)) return true;
  if (typeof syscall === 'string' && SOCKET_CALLS.has(syscall)) return true;
  return (
    err.name === 'FetchError' ||
    err.name === 'AbortError' ||
    /socket hang up|network|ECONNRESET|ECONNREFUSED/i.test(err.message)
  );
}

/** A 422 caused by a JSON-patch `test` operation that did not hold (the object changed). */
function isFailedPatchTest(message: string): boolean {
  return /testing value .* failed|test operation|test failed/i.test(message);
}

/** The HTTP code of anything the client throws, when it carries one. */
export function statusCodeOf(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  if (typeof err === 'object' && err !== null) {
    const e = err as { statusCode?: unknown; code?: unknown };
    if (typeof e.statusCode === 'number') return e.statusCode;
    if (typeof e.code === 'number') return e.code;
  }
  return undefined;
}

/**
 * Maps what `@kubernetes/client-node` throws to Plugline's typed errors, keeping the original
 * as `cause`: 404 → NotFoundError; 409 AlreadyExists → AlreadyExistsError; other 409 and a 422
 * from a failed JSON-patch `test` → ConflictError; 408/429/5xx and network failures →
 * TransientError; other HTTP answers → KubeApiError. Anything else is returned unchanged.
 *
 * @param what - names the request in the message, e.g. `patch virtualmachineinstances ns/vm`.
 */
export function mapKubeError(err: unknown, what: string): Error {
  if (err instanceof PluglineError) return err;
  if (err instanceof ApiException) {
    const status = parseStatus(err.body);
    const detail = status.message ?? `HTTP ${err.code}`;
    const message = `${what}: ${detail}`;
    const options = { cause: err };
    const code = err.code;
    if (code === 404) return new NotFoundError(message, options);
    if (code === 409 && status.reason === 'AlreadyExists') {
      return new AlreadyExistsError(message, options);
    }
    if (code === 409) return new ConflictError(message, options);
    if (code === 422 && isFailedPatchTest(detail)) return new ConflictError(message, options);
    if (code === 408 || code === 429 || code >= 500) {
      return new TransientError(status.reason ?? 'KubeApiUnavailable', message, options);
    }
    return new KubeApiError(code, status.reason ?? 'KubeApiError', message, options);
  }
  if (isNetworkError(err)) {
    const message = err instanceof Error ? err.message : String(err);
    return new TransientError('KubeApiUnreachable', `${what}: ${message}`, { cause: err });
  }
  return err instanceof Error
    ? err
    : new PluglineError('Unknown', `${what}: ${String(err)}`, { cause: err });
}
