// Connect clients for host agents, created lazily and kept per host id. The
// control plane reaches capsules only through these.
import { createClient, type Client, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport, Http2SessionManager } from '@connectrpc/connect-node';
import type http2 from 'node:http2';
import { HostAgentService } from '@wrenn/contracts/gen/hostagent/v1/hostagent_pb';
import { AGENT_H2_CONNECTION_WINDOW, AGENT_H2_SETTINGS } from '@wrenn/contracts';

export type HostAgentClient = Client<typeof HostAgentService>;

const widened = new WeakSet<http2.Http2Session>();

/**
 * Widens each connection's receive window (HTTP/2 starts at 64 KiB, which holds a
 * streamed download to one 64 KiB chunk per round trip). Node only allows that
 * on a live session, so it is done on the first request of each connection.
 */
class WideWindowSessionManager extends Http2SessionManager {
  override async request(...args: Parameters<Http2SessionManager['request']>): Promise<http2.ClientHttp2Stream> {
    const stream = await super.request(...args);
    const session = stream.session;
    if (session && !widened.has(session)) {
      widened.add(session);
      session.setLocalWindowSize(AGENT_H2_CONNECTION_WINDOW);
    }
    return stream;
  }
}

export interface HostEndpoint {
  id: string;
  /** host:port of the agent's RPC server. */
  address: string;
  /** Shared secret the agent expects as `Authorization: Bearer …`. */
  agent_token: string;
}

interface Entry {
  address: string;
  token: string;
  client: HostAgentClient;
}

export class HostClientPool {
  private readonly entries = new Map<string, Entry>();

  /** The client for a host; recreated when its address or token changed (re-registration, rotation). */
  get(host: HostEndpoint): HostAgentClient {
    const cur = this.entries.get(host.id);
    if (cur && cur.address === host.address && cur.token === host.agent_token) return cur.client;
    const token = host.agent_token;
    const auth: Interceptor = (next) => (req) => {
      if (token) req.header.set('authorization', `Bearer ${token}`);
      return next(req);
    };
    // h2c: one connection multiplexes every call, and client streams (file upload) need HTTP/2.
    const baseUrl = `http://${host.address}`;
    const transport = createConnectTransport({
      baseUrl,
      httpVersion: '2',
      interceptors: [auth],
      // Large frames and windows for file streams (64 KiB chunks); compression only costs CPU here.
      sessionManager: new WideWindowSessionManager(baseUrl, {}, { settings: AGENT_H2_SETTINGS }),
      acceptCompression: [],
    });
    const client = createClient(HostAgentService, transport);
    this.entries.set(host.id, { address: host.address, token, client });
    return client;
  }

  /** Drops a host's client (host deleted, or its connection is known to be bad). */
  evict(hostId: string): void {
    this.entries.delete(hostId);
  }
}
