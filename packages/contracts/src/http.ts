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
