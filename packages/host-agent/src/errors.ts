// Errors the manager raises carry a Connect code; the RPC layer passes them
// through and turns anything else into a bare Internal error (details logged).
import { Code, ConnectError } from '@connectrpc/connect';

export { Code, ConnectError };

export const notFound = (msg: string) => new ConnectError(msg, Code.NotFound);
export const invalidArgument = (msg: string) => new ConnectError(msg, Code.InvalidArgument);
export const failedPrecondition = (msg: string) => new ConnectError(msg, Code.FailedPrecondition);
export const alreadyExists = (msg: string) => new ConnectError(msg, Code.AlreadyExists);
export const unavailable = (msg: string) => new ConnectError(msg, Code.Unavailable);
export const resourceExhausted = (msg: string) => new ConnectError(msg, Code.ResourceExhausted);
export const deadlineExceeded = (msg: string) => new ConnectError(msg, Code.DeadlineExceeded);
export const internal = (msg: string) => new ConnectError(msg, Code.Internal);

/** Low-level socket errors meaning "nobody answers at that address". */
const CONNECTION_ERRNOS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ETIMEDOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** True when err (or its cause chain) is a connection-level failure. */
export function isConnectionError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && CONNECTION_ERRNOS.has(code)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}
