/**
 * The claim throttle on Redis, shared by every instance: one hash per key {count, start} written
 * by one Lua script (count, or restart the window when it is over), with a Redis expiry a little
 * past the window so abandoned keys go away by themselves. Times come from the service clock
 * (ARGV), like the in-process limiter, so both behave the same under a pinned clock.
 */
import type { Clock } from '../clock.js';
import { verdict, type AttemptLimiter, type LimitVerdict, type LimiterSettings } from '../policy/index.js';
import { StoreError } from './errors.js';
import type { RedisClient } from './redis-connection.js';

const FAIL = `
local start = tonumber(redis.call('HGET', KEYS[1], 'start'))
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
if start == nil or now - start >= window then
  redis.call('HSET', KEYS[1], 'count', 1, 'start', now)
else
  redis.call('HINCRBY', KEYS[1], 'count', 1)
end
redis.call('PEXPIRE', KEYS[1], window + 60000)
return 1
`;

export class RedisAttemptLimiter implements AttemptLimiter {
  constructor(
    private readonly redis: RedisClient,
    /** Key prefix (hash-tagged in Cluster mode, as the store's). */
    private readonly prefix: string,
    private readonly clock: Clock,
    private readonly settings: LimiterSettings,
  ) {}

  async check(key: string): Promise<LimitVerdict> {
    const [count, start] = await this.#call(() => this.redis.hmget(this.#key(key), 'count', 'start'));
    const entry = count != null && start != null ? { count: Number(count), windowStart: Number(start) } : undefined;
    return verdict(this.settings, this.clock.now().getTime(), entry);
  }

  async fail(key: string): Promise<void> {
    await this.#call(() => this.redis.eval(FAIL, 1, this.#key(key), this.clock.now().getTime(), this.settings.windowSeconds * 1000));
  }

  async reset(key: string): Promise<void> {
    await this.#call(() => this.redis.del(this.#key(key)));
  }

  #key(key: string): string {
    return `${this.prefix}attempts:${key}`;
  }

  async #call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new StoreError('STORE_UNAVAILABLE', `Redis claim throttle: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }
}
