// Idle interval after which a server stream sends a keepalive event. E2B
// clients may ask for their own with the `Keepalive-Ping-Interval` header
// (seconds); otherwise envd's --keepalive-ms applies.
import type { HandlerContext } from '@connectrpc/connect';
import type { EnvdState } from './state.js';

export function keepaliveInterval(state: EnvdState, ctx: HandlerContext): number {
  const header = ctx.requestHeader.get('keepalive-ping-interval');
  const seconds = header ? Number(header) : NaN;
  if (Number.isFinite(seconds) && seconds > 0 && seconds <= 86_400) return seconds * 1000;
  return state.options.keepaliveMs;
}
