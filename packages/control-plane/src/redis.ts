// Optional Redis. With it, API-key revocations reach every control plane at once;
// without it, other control planes notice within the key cache's few seconds.
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { RevocationBus } from './auth/api-keys.js';

const REVOKED_CHANNEL = 'wrenn:cp:api-keys:revoked';

export interface RedisHandle {
  client: Redis;
  revocationBus: RevocationBus;
  close(): Promise<void>;
}

export async function openRedis(url: string, log: Logger): Promise<RedisHandle> {
  const opts = { lazyConnect: true, connectTimeout: 5_000, maxRetriesPerRequest: 3 };
  const client = new Redis(url, opts);
  const subscriber = new Redis(url, opts);
  // Reconnection is automatic; log instead of crashing on 'error' events.
  for (const c of [client, subscriber]) c.on('error', (err: Error) => log.warn({ err }, 'redis connection error'));
  try {
    await Promise.all([client.connect(), subscriber.connect()]);
  } catch (err) {
    client.disconnect();
    subscriber.disconnect();
    throw new Error(`cannot connect to REDIS_URL: ${(err as Error).message}`);
  }

  const listeners: ((ids: string[]) => void)[] = [];
  await subscriber.subscribe(REVOKED_CHANNEL);
  subscriber.on('message', (channel: string, message: string) => {
    if (channel !== REVOKED_CHANNEL) return;
    const ids = message.split(',').filter((s) => /^[0-9a-f-]{36}$/.test(s));
    for (const l of listeners) l(ids);
  });

  return {
    client,
    revocationBus: {
      publish(keyIds) {
        client.publish(REVOKED_CHANNEL, keyIds.join(',')).catch((err: unknown) => {
          log.warn({ err }, 'redis: failed to publish an API key revocation');
        });
      },
      subscribe(onRevoked) {
        listeners.push(onRevoked);
      },
    },
    async close() {
      await Promise.allSettled([subscriber.quit(), client.quit()]);
    },
  };
}
