/**
 * Request-rate buckets on Redis, shared by every instance: one hash per bucket {t: tokens, at: ms}
 * read, refilled and taken from by ONE Lua script for all the buckets of a request (one from each,
 * or none when one is empty), with a Redis expiry a minute past a full refill so idle buckets go
 * away by themselves. The keys carry the deployment's prefix (hash-tagged in Cluster mode, as the
 * store's), so the buckets of one request live in one slot. Times come from the service clock
 * (ARGV), like the in-process limiter, so both behave the same under a pinned clock; a clock that
 * is behind the one that last wrote a bucket refills nothing.
 */
import type { Clock } from '../clock.js';
import { isActive, type RateLimiter, type RateRequest, type RateVerdict } from '../policy/index.js';
import { StoreError } from './errors.js';
import type { RedisClient } from './redis-connection.js';

/** KEYS: the buckets. ARGV: now (ms), then perSecond and burst of each bucket. Returns {0, 0} or {i, seconds}. */
const TAKE = `
local now = tonumber(ARGV[1])
local tokens, ats = {}, {}
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local h = redis.call('HMGET', KEYS[i], 't', 'at')
  local t, at = tonumber(h[1]), tonumber(h[2])
  if t == nil or at == nil then
    t, at = burst, now
  elseif now > at then
    t = math.min(burst, t + (now - at) * rate / 1000)
    at = now
  end
  if t < 1 then return { i, math.ceil((1 - t) / rate) } end
  tokens[i], ats[i] = t, at
end
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  redis.call('HSET', KEYS[i], 't', tostring(tokens[i] - 1), 'at', tostring(ats[i]))
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst * 1000 / rate) + 60000)
end
return { 0, 0 }
`;

export class RedisRateLimiter implements RateLimiter {
  constructor(
    private readonly redis: RedisClient,
    /** Key prefix (hash-tagged in Cluster mode, as the store's). */
    private readonly prefix: string,
    private readonly clock: Clock,
  ) {}

  async take(requests: readonly RateRequest[]): Promise<RateVerdict> {
    const active = requests.map((r, i) => ({ ...r, i })).filter((r) => isActive(r.limit));
    if (active.length === 0) return { allowed: true, retryAfterSeconds: 0 };
    const keys = active.map((r) => `${this.prefix}rate:${r.key}`);
    const args = [this.clock.now().getTime(), ...active.flatMap((r) => [r.limit.perSecond, r.limit.burst])];
    let res: [number, number];
    try {
      res = (await this.redis.eval(TAKE, keys.length, ...keys, ...args)) as [number, number];
    } catch (err) {
      throw new StoreError('STORE_UNAVAILABLE', `Redis rate limiter: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    const [refused, seconds] = res;
    if (refused === 0) return { allowed: true, retryAfterSeconds: 0 };
    return { allowed: false, refused: active[refused - 1]!.i, retryAfterSeconds: Math.max(1, seconds) };
  }
}
