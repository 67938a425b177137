// Typed errors. Every API failure is `{"error":{"code","message"}}`; the
// class is chosen from the code first (it is more precise), then the status.

export class WrennError extends Error {
  /** HTTP status of the failed request; undefined for client-side errors (no response). */
  readonly status: number | undefined;
  /** The API's error code (e.g. `not_found`, `invalid_state`), or a client-side one (`connection_failed`). */
  readonly code: string;

  constructor(message: string, code: string, status?: number) {
    super(message);
    this.name = 'WrennError';
    this.code = code;
    this.status = status;
  }
}

/** 401: missing, invalid or revoked API key / token. */
export class AuthenticationError extends WrennError {
  override name = 'AuthenticationError';
}
/** 403: authenticated, but not allowed. */
export class ForbiddenError extends WrennError {
  override name = 'ForbiddenError';
}
/** 400/413/422: the request itself is wrong. */
export class InvalidArgumentError extends WrennError {
  override name = 'InvalidArgumentError';
}
/** 404: no such capsule (or it belongs to another team), process, file or route. */
export class NotFoundError extends WrennError {
  override name = 'NotFoundError';
}
/** 409: the capsule is in the wrong state (e.g. exec on a paused capsule) or the thing already exists. */
export class ConflictError extends WrennError {
  override name = 'ConflictError';
}
/** A deadline passed: the request's, or the command's own timeout. */
export class TimeoutError extends WrennError {
  override name = 'TimeoutError';
}
/** 429: too many requests. */
export class RateLimitError extends WrennError {
  override name = 'RateLimitError';
}
/** 502/503: no host can take the capsule, or its host cannot be reached. */
export class UnavailableError extends WrennError {
  override name = 'UnavailableError';
}

type ErrorClass = new (message: string, code: string, status?: number) => WrennError;

const BY_CODE: Record<string, ErrorClass> = {
  unauthorized: AuthenticationError,
  invalid_api_key: AuthenticationError,
  forbidden: ForbiddenError,
  invalid_request: InvalidArgumentError,
  too_large: InvalidArgumentError,
  payload_too_large: InvalidArgumentError,
  not_found: NotFoundError,
  invalid_state: ConflictError,
  conflict: ConflictError,
  timeout: TimeoutError,
  deadline_exceeded: TimeoutError,
  request_timeout: TimeoutError,
  rate_limited: RateLimitError,
  no_hosts_available: UnavailableError,
  host_unavailable: UnavailableError,
  unavailable: UnavailableError,
};

const BY_STATUS: Record<number, ErrorClass> = {
  400: InvalidArgumentError,
  401: AuthenticationError,
  403: ForbiddenError,
  404: NotFoundError,
  408: TimeoutError,
  409: ConflictError,
  413: InvalidArgumentError,
  422: InvalidArgumentError,
  429: RateLimitError,
  502: UnavailableError,
  503: UnavailableError,
  504: TimeoutError,
};

/** Builds the typed error for a failed response from its status and (possibly non-JSON) body. */
export function errorFromResponse(status: number, body: string): WrennError {
  let code: string | undefined;
  let message: string | undefined;
  try {
    const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown } };
    if (typeof parsed?.error?.code === 'string') code = parsed.error.code;
    if (typeof parsed?.error?.message === 'string') message = parsed.error.message;
  } catch {
    // Not JSON (a proxy's error page, an empty body): fall back to the status.
  }
  code ??= status >= 500 ? 'internal_error' : `http_${status}`;
  message ??=
    body.trim() && body.length <= 200 && !body.includes('<') ? body.trim() : `request failed with HTTP ${status}`;
  const Cls = BY_CODE[code] ?? BY_STATUS[status] ?? WrennError;
  return new Cls(message, code, status);
}

const CODE_BY_STATUS: Record<number, string> = {
  400: 'invalid_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  408: 'request_timeout',
  409: 'conflict',
  413: 'too_large',
  429: 'rate_limited',
  502: 'agent_error',
  503: 'unavailable',
  504: 'timeout',
};

/** The typed error for a status known without a body (e.g. a WebSocket close code 4000 + status). */
export function errorFromStatus(status: number, message: string): WrennError {
  const Cls = BY_STATUS[status] ?? WrennError;
  return new Cls(message, CODE_BY_STATUS[status] ?? `http_${status}`, status);
}

/**
 * Why a WebSocket session ended early. The server sends `{"type":"error","data"}`
 * and closes with 4000 + the HTTP status the failure would have had.
 */
export function errorFromClose(closeCode: number, reason: string, lastError: string | undefined): WrennError {
  const message = lastError || reason || 'the connection closed before the process exited';
  if (closeCode >= 4400 && closeCode < 4600) return errorFromStatus(closeCode - 4000, message);
  if (lastError) return errorFromMessage(lastError);
  return new WrennError(message, 'stream_closed');
}

/**
 * An error frame received on a WebSocket (`{"type":"error","data":"…","code"?}`):
 * there is no status, so the class comes from the code when the server sends
 * one, else from the usual wording of the message.
 */
export function errorFromMessage(message: string, code?: string): WrennError {
  if (code && BY_CODE[code]) return new (BY_CODE[code] as ErrorClass)(message, code);
  if (/not found/i.test(message)) return new NotFoundError(message, 'not_found');
  if (/not running|not paused|is (paused|stopped|pending|starting|missing)/i.test(message)) {
    return new ConflictError(message, 'invalid_state');
  }
  if (/timed out|deadline/i.test(message)) return new TimeoutError(message, 'timeout');
  if (/unauthori[sz]ed|authentication/i.test(message)) return new AuthenticationError(message, 'unauthorized');
  return new WrennError(message, code ?? 'stream_error');
}
