// envd's error type, and the mapping of file system errors to Connect codes
// and HTTP statuses, with messages that name the path so a caller sees
// exactly what failed.

/** Connect/gRPC status codes (same numbers as @connectrpc/connect's Code). */
export const Code = {
  Canceled: 1,
  Unknown: 2,
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  FailedPrecondition: 9,
  Aborted: 10,
  OutOfRange: 11,
  Unimplemented: 12,
  Internal: 13,
  Unavailable: 14,
  DataLoss: 15,
  Unauthenticated: 16,
} as const;
export type Code = (typeof Code)[keyof typeof Code];

/**
 * An error with a Connect code. Connect recognises errors by shape (name
 * "ConnectError", code, rawMessage, metadata, details, cause), so RPC handlers
 * can throw this as is, while the HTTP-only start-up path never has to load
 * Connect and protobuf.
 */
export class EnvdError extends Error {
  override readonly name = 'ConnectError';
  readonly rawMessage: string;
  readonly details: unknown[] = [];
  override readonly cause: unknown = undefined;
  private headers: Headers | undefined;

  constructor(
    message: string,
    readonly code: Code,
  ) {
    super(message);
    this.rawMessage = message;
  }

  /** Response metadata (created on demand: the Headers global is costly to load). */
  get metadata(): Headers {
    this.headers ??= new Headers();
    return this.headers;
  }
}

export function errnoCode(err: unknown): string | undefined {
  return err && typeof err === 'object' && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

const reasons: Record<string, [Code, number, string]> = {
  ENOENT: [Code.NotFound, 404, 'no such file or directory'],
  EACCES: [Code.PermissionDenied, 403, 'permission denied'],
  EPERM: [Code.PermissionDenied, 403, 'operation not permitted'],
  EROFS: [Code.PermissionDenied, 403, 'read-only file system'],
  EEXIST: [Code.AlreadyExists, 409, 'already exists'],
  ENOTEMPTY: [Code.FailedPrecondition, 409, 'directory not empty'],
  ENOTDIR: [Code.InvalidArgument, 400, 'not a directory'],
  EISDIR: [Code.InvalidArgument, 400, 'is a directory'],
  ELOOP: [Code.FailedPrecondition, 400, 'too many levels of symbolic links'],
  ENAMETOOLONG: [Code.InvalidArgument, 400, 'file name too long'],
  EINVAL: [Code.InvalidArgument, 400, 'invalid argument'],
  ENOSPC: [Code.ResourceExhausted, 507, 'no space left on device'],
  EDQUOT: [Code.ResourceExhausted, 507, 'disk quota exceeded'],
  EMFILE: [Code.ResourceExhausted, 503, 'too many open files'],
  EBUSY: [Code.FailedPrecondition, 409, 'resource busy'],
  EXDEV: [Code.FailedPrecondition, 400, 'cross-device link'],
};

/** The path a Node file system error is about, else `fallback`. */
function errPath(err: unknown, fallback: string): string {
  return err && typeof err === 'object' && 'path' in err && typeof err.path === 'string' ? err.path : fallback;
}

/** An EnvdError for a failed file system call on `path`. */
export function fsError(err: unknown, path: string): EnvdError {
  if (err instanceof EnvdError) return err;
  const code = errnoCode(err);
  const reason = code ? reasons[code] : undefined;
  const prefix = errPath(err, path);
  if (reason) return new EnvdError(`${prefix}: ${reason[2]}`, reason[0]);
  return new EnvdError(`${prefix}: ${err instanceof Error ? err.message : String(err)}`, Code.Internal);
}

/** HTTP status and message for a failed file system call on `path`. */
export function httpFsError(err: unknown, path: string): [number, string] {
  if (err instanceof EnvdError) return [httpStatusOf(err.code), err.rawMessage];
  const code = errnoCode(err);
  const reason = code ? reasons[code] : undefined;
  const p = errPath(err, path);
  if (reason) return [reason[1], `${p}: ${reason[2]}`];
  return [500, `${p}: ${err instanceof Error ? err.message : String(err)}`];
}

export function httpStatusOf(code: Code): number {
  switch (code) {
    case Code.InvalidArgument:
    case Code.FailedPrecondition:
    case Code.OutOfRange:
      return 400;
    case Code.Unauthenticated:
      return 401;
    case Code.PermissionDenied:
      return 403;
    case Code.NotFound:
      return 404;
    case Code.AlreadyExists:
    case Code.Aborted:
      return 409;
    case Code.ResourceExhausted:
      return 507;
    case Code.Unimplemented:
      return 501;
    case Code.Unavailable:
      return 503;
    default:
      return 500;
  }
}
