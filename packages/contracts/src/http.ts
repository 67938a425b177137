// HTTP rules shared by the programs that proxy traffic (the control plane's
// port proxy and the host agent's /proxy endpoint).

/** Hop-by-hop headers (RFC 9110 §7.6.1): never forwarded; upgrades re-add theirs. */
export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * HTTP/2 settings of the control plane ↔ host agent connection, for both ends:
 * a 64 KiB file chunk fits one DATA frame, and streams and the connection are
 * not held to HTTP/2's default 64 KiB in flight (a round trip per chunk).
 */
export const AGENT_H2_SETTINGS = { maxFrameSize: 1024 * 1024, initialWindowSize: 8 * 1024 * 1024 } as const;
export const AGENT_H2_CONNECTION_WINDOW = 32 * 1024 * 1024;
