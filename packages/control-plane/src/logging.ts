// pino logger for the control plane. Credentials in headers, cookies and OAuth
// query strings are redacted before anything is written.
import pino, { type DestinationStream, type Logger } from 'pino';
import type { FastifyReply, FastifyRequest } from 'fastify';

const REDACTED = '[redacted]';
// Query parameters that carry one-time secrets (OAuth code/state) or could carry tokens.
const SECRET_QUERY_PARAMS = /([?&](?:code|state|token|key|password|access_token)=)[^&#]*/gi;

export function redactUrl(url: string): string {
  return url.replace(SECRET_QUERY_PARAMS, `$1${REDACTED}`);
}

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { svc: 'control-plane' },
      redact: {
        paths: [
          'req.headers.authorization',
          'req.headers["x-api-key"]',
          'req.headers["x-host-token"]',
          'req.headers.cookie',
          'res.headers["set-cookie"]',
        ],
        censor: REDACTED,
      },
      serializers: {
        req: (req: FastifyRequest) => ({
          method: req.method,
          url: redactUrl(req.url),
          remoteAddress: req.ip,
          headers: req.headers,
        }),
        res: (res: FastifyReply) => ({ statusCode: res.statusCode }),
        err: pino.stdSerializers.err,
      },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
