/**
 * How provisiond reaches Redis: one server, a Sentinel-monitored master, or a Cluster. Every
 * connection the service opens (the store, the broker's session store and message fan-out) is
 * made here, so the three topologies are handled in one place.
 *
 * Cluster: a Lua script may only touch keys of one hash slot. provisiond's scripts touch several
 * of its keys at once (a device, its claim-code index, the state counters, ...), so in Cluster mode
 * every key of one deployment carries the same hash tag (`{prefix}`) and lives in one slot: Cluster
 * then gives failover, not sharding of provisiond's data (docs/operations.md sizes one slot).
 */
import { Cluster, Redis, type RedisOptions } from 'ioredis';

export type RedisTopology = 'standalone' | 'sentinel' | 'cluster';

export interface RedisSettings {
  /** redis:// or rediss:// URL: password, user, db and TLS for every topology. */
  url: string;
  topology?: RedisTopology;
  /** host:port of each sentinel (topology sentinel). */
  sentinels?: readonly string[];
  /** Master group name (topology sentinel); default mymaster. */
  sentinelName?: string;
  sentinelPassword?: string;
  /** More start nodes besides the URL's host (topology cluster). */
  clusterNodes?: readonly string[];
}

export type RedisClient = Redis | Cluster;

/** Per-connection behaviour, the same for every topology. */
export interface ConnectionOptions {
  lazyConnect?: boolean;
  connectTimeout?: number;
  commandTimeout?: number;
  maxRetriesPerRequest?: number | null;
  /** Delay before reconnect attempt `times`, or null to give up. */
  retryStrategy?: (times: number) => number | null;
  /** Prefixed to every key by ioredis (not to pub/sub channels). */
  keyPrefix?: string;
  /** false: while disconnected, commands fail at once instead of waiting for the reconnect. */
  enableOfflineQueue?: boolean;
}

function hostPort(value: string): { host: string; port: number } {
  const i = value.lastIndexOf(':');
  return { host: value.slice(0, i), port: Number(value.slice(i + 1)) };
}

/** Credentials, db and TLS from the URL, as ioredis options. */
function urlOptions(url: string): RedisOptions {
  const u = new URL(url);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : undefined;
  return {
    ...(u.username !== '' ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password !== '' ? { password: decodeURIComponent(u.password) } : {}),
    ...(db !== undefined && Number.isInteger(db) ? { db } : {}),
    ...(u.protocol === 'rediss:' ? { tls: { servername: u.hostname } } : {}),
  };
}

/** A new client (not connected when lazyConnect). The caller listens for 'error' and closes it. */
export function createRedisClient(settings: RedisSettings, opts: ConnectionOptions = {}): RedisClient {
  const common: RedisOptions = {
    ...(opts.lazyConnect !== undefined ? { lazyConnect: opts.lazyConnect } : {}),
    ...(opts.connectTimeout !== undefined ? { connectTimeout: opts.connectTimeout } : {}),
    ...(opts.commandTimeout !== undefined ? { commandTimeout: opts.commandTimeout } : {}),
    ...(opts.maxRetriesPerRequest !== undefined ? { maxRetriesPerRequest: opts.maxRetriesPerRequest } : {}),
    ...(opts.keyPrefix !== undefined ? { keyPrefix: opts.keyPrefix } : {}),
    ...(opts.enableOfflineQueue !== undefined ? { enableOfflineQueue: opts.enableOfflineQueue } : {}),
  };
  const retry = opts.retryStrategy;
  switch (settings.topology ?? 'standalone') {
    case 'standalone':
      return new Redis(settings.url, { ...common, ...(retry ? { retryStrategy: retry } : {}) });
    case 'sentinel': {
      const { tls, ...auth } = urlOptions(settings.url);
      return new Redis({
        ...auth,
        ...common,
        sentinels: (settings.sentinels ?? []).map(hostPort),
        name: settings.sentinelName ?? 'mymaster',
        ...(settings.sentinelPassword !== undefined ? { sentinelPassword: settings.sentinelPassword } : {}),
        ...(tls ? { tls, enableTLSForSentinelMode: true } : {}),
        ...(retry ? { sentinelRetryStrategy: retry, retryStrategy: retry } : {}),
      });
    }
    case 'cluster': {
      const u = new URL(settings.url);
      const { db: _db, ...auth } = urlOptions(settings.url);
      const nodes = [{ host: u.hostname, port: Number(u.port || 6379) }, ...(settings.clusterNodes ?? []).map(hostPort)];
      const { keyPrefix, lazyConnect, enableOfflineQueue, ...perNode } = common;
      return new Cluster(nodes, {
        redisOptions: { ...auth, ...perNode },
        ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
        ...(keyPrefix !== undefined ? { keyPrefix } : {}),
        ...(lazyConnect !== undefined ? { lazyConnect } : {}),
        ...(retry ? { clusterRetryStrategy: retry } : {}),
      });
    }
  }
}

/**
 * The key prefix for this topology: in Cluster mode wrapped in a hash tag (unless it has one), so
 * that every key of the deployment hashes to one slot and the Lua scripts may touch them together.
 */
export function clusterSafePrefix(settings: RedisSettings, prefix: string): string {
  if ((settings.topology ?? 'standalone') !== 'cluster' || /\{[^}]+\}/.test(prefix)) return prefix;
  return `{${prefix}}`;
}

/** Where Redis is, for messages: never the password. */
export function describeRedis(settings: RedisSettings): string {
  let url: string;
  try {
    const u = new URL(settings.url);
    if (u.password !== '') u.password = '***';
    url = u.toString();
  } catch {
    url = '(invalid url)';
  }
  switch (settings.topology ?? 'standalone') {
    case 'standalone':
      return url;
    case 'sentinel':
      return `sentinel master "${settings.sentinelName ?? 'mymaster'}" via ${(settings.sentinels ?? []).join(', ')} (${url})`;
    case 'cluster':
      return `cluster ${url}${settings.clusterNodes?.length ? ` + ${settings.clusterNodes.join(', ')}` : ''}`;
  }
}
