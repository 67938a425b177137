// Connect clients for host agents, created lazily and kept per host id. The
// control plane reaches capsules only through these.
import { createClient, type Client, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { HostAgentService } from '@wrenn/contracts/gen/hostagent/v1/hostagent_pb';

export type HostAgentClient = Client<typeof HostAgentService>;

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
    const transport = createConnectTransport({
      baseUrl: `http://${host.address}`,
      httpVersion: '2',
      interceptors: [auth],
      // Large frames and stream windows for file streams (64 KiB chunks); compression only costs CPU here.
      nodeOptions: { settings: { maxFrameSize: 1024 * 1024, initialWindowSize: 8 * 1024 * 1024 } },
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
