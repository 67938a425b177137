// Host agent (Connect) errors as API errors. The agent already turns its own
// unexpected failures into a bare "internal error", so the messages of the
// codes below are safe to show; transport failures never show their details.
import { Code, ConnectError } from '@connectrpc/connect';
import { formatId } from '@wrenn/contracts';
import { ApiError } from '../errors.js';

/** Socket-level failures meaning "the agent did not answer at its address". */
const TRANSPORT_ERRNOS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ERR_HTTP2_ERROR',
  'ERR_HTTP2_GOAWAY_SESSION',
  'ERR_HTTP2_INVALID_SESSION',
  'ERR_HTTP2_STREAM_CANCEL',
  'ERR_HTTP2_SESSION_ERROR',
  'ERR_HTTP2_PING_CANCEL',
]);

/** True when err (or a cause) is a connection failure rather than an answer from the agent. */
export function isTransportError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 6; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && TRANSPORT_ERRNOS.has(code)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

export function hostUnreachable(hostId: string): ApiError {
  return new ApiError(503, 'host_unavailable', `host ${formatId('host', hostId)} is unreachable; try again later`);
}

/** Maps an error from a host agent call; `hostId` names the host in unreachable errors. */
export function agentError(err: unknown, hostId: string): ApiError {
  if (err instanceof ApiError) return err;
  if (isTransportError(err)) return hostUnreachable(hostId);
  const ce = ConnectError.from(err);
  const msg = ce.rawMessage;
  switch (ce.code) {
    case Code.NotFound:
      return new ApiError(404, 'not_found', msg);
    case Code.InvalidArgument:
      return new ApiError(400, 'invalid_request', msg);
    case Code.FailedPrecondition:
      return new ApiError(409, 'invalid_state', msg);
    case Code.AlreadyExists:
      return new ApiError(409, 'conflict', msg);
    case Code.PermissionDenied:
      return new ApiError(403, 'forbidden', msg);
    case Code.ResourceExhausted:
      return new ApiError(409, 'resource_exhausted', msg);
    case Code.DeadlineExceeded:
      return new ApiError(504, 'timeout', msg || 'the host agent did not answer in time');
    case Code.Unimplemented:
      return new ApiError(501, 'not_implemented', msg);
    case Code.Unavailable:
      // Reached the agent, but the capsule behind it does not answer (envd down, capsule starting).
      return new ApiError(503, 'capsule_unavailable', msg);
    case Code.Unauthenticated:
      // The agent's own token check, or envd refusing an unknown user inside the capsule.
      if (/agent token/.test(msg)) {
        return new ApiError(502, 'agent_error', `host ${formatId('host', hostId)} rejected the control plane's token`);
      }
      return new ApiError(400, 'invalid_request', msg);
    case Code.Canceled:
      return new ApiError(499, 'canceled', 'the request was canceled');
    default:
      return new ApiError(502, 'agent_error', `host ${formatId('host', hostId)} failed: ${msg || 'internal error'}`);
  }
}

/** The Connect code of an agent error, or null for transport failures and non-Connect errors. */
export function connectCode(err: unknown): Code | null {
  if (isTransportError(err)) return null;
  return err instanceof ConnectError ? err.code : null;
}
