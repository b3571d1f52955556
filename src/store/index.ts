/**
 * The store domain's public surface. Domain code imports types from here (or ./types.js); only the
 * composition root calls createStore().
 */
import { RedisStore } from './redis.js';
import { SqliteStore } from './sqlite.js';
import type { RedisSettings } from './redis-connection.js';
import type { Store } from './types.js';

export type {
  ApiKeyRecord,
  AuditPage,
  AuditQuery,
  BootstrapTokenRecord,
  CertificateRecord,
  CertificateStatus,
  CertificateStatusChange,
  ConfigDocumentRecord,
  DeviceQuery,
  DeviceRecord,
  DeviceUpdateExtras,
  IssuanceCommit,
  ProfileRecord,
  Store,
  TenantRecord,
} from './types.js';
export { StoreError } from './errors.js';
export { SqliteStore } from './sqlite.js';
export { RedisStore } from './redis.js';
export { RedisAttemptLimiter } from './redis-attempt-limiter.js';
export { RedisRateLimiter } from './redis-rate-limiter.js';

export type { RedisClient, RedisSettings, RedisTopology } from './redis-connection.js';
export { clusterSafePrefix, createRedisClient, describeRedis } from './redis-connection.js';

export type StoreConfig = { kind: 'sqlite'; file: string } | ({ kind: 'redis'; prefix: string } & RedisSettings);

/** Builds the configured backend, not yet started: the caller runs start() and, on shutdown, stop(). */
export function createStore(config: StoreConfig): Store {
  switch (config.kind) {
    case 'sqlite':
      return new SqliteStore({ file: config.file });
    case 'redis': {
      const { kind: _kind, ...redis } = config;
      return new RedisStore(redis);
    }
  }
}
