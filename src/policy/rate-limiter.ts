/**
 * Request-rate limits as token buckets: a bucket holds at most `burst` tokens, refills at
 * `perSecond` tokens a second, and every request takes one token. A request that names several
 * buckets (an API key and its tenant) takes one from each, or from none when any of them is empty,
 * so a refused request costs no bucket anything.
 *
 * Two implementations, one behaviour (test/contract/rate-limiter.test.ts): in process (one
 * instance, the SQLite store; the broker's connection rates, which are about this process's CPU)
 * and on Redis (src/store/redis-rate-limiter.ts; several instances share the buckets). Both take the
 * time from the injected clock, so tests pin it.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { Clock } from '../clock.js';

export interface RateLimit {
  /** Tokens added per second; 0 turns the limit off. */
  perSecond: number;
  /** Bucket size: requests that may come at once after a quiet period (>= 1). */
  burst: number;
}

export interface RateRequest {
  /** The bucket, e.g. `client:key:<id>`, `client:ip:<address>`, `tenant:<id>`. */
  key: string;
  limit: RateLimit;
}

export interface RateVerdict {
  allowed: boolean;
  /** When refused: the index (in the request list) of the first empty bucket. */
  refused?: number;
  /** When refused: seconds until that bucket holds a token again (>= 1). */
  retryAfterSeconds: number;
}

export interface RateLimiter {
  /** Takes one token from each bucket, or none when one of them is empty. */
  take(requests: readonly RateRequest[]): Promise<RateVerdict>;
}

/** A limit that is off (perSecond 0) takes nothing and never refuses. */
export function isActive(limit: RateLimit | undefined): limit is RateLimit {
  return limit !== undefined && limit.perSecond > 0;
}

export interface Bucket {
  tokens: number;
  /** When `tokens` was computed (ms). */
  at: number;
}

/** The bucket at `now` (refilled since `at`; a clock that went back refills nothing). */
export function refill(limit: RateLimit, bucket: Bucket | undefined, now: number): Bucket {
  if (!bucket) return { tokens: limit.burst, at: now };
  if (now <= bucket.at) return bucket;
  return { tokens: Math.min(limit.burst, bucket.tokens + ((now - bucket.at) * limit.perSecond) / 1000), at: now };
}

/** Seconds until a bucket holding `tokens` has one again. */
export function secondsUntilToken(limit: RateLimit, tokens: number): number {
  return Math.max(1, Math.ceil((1 - tokens) / limit.perSecond));
}

export class MemoryRateLimiter implements RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #limits = new Map<string, RateLimit>();

  constructor(
    private readonly clock: Clock,
    /** Buckets kept at most; beyond it, full ones are forgotten (a full bucket is the same as none). */
    private readonly maxBuckets = 100_000,
  ) {}

  async take(requests: readonly RateRequest[]): Promise<RateVerdict> {
    return this.takeNow(requests);
  }

  /** take(), synchronously (the broker decides on a new socket before anything else runs). */
  takeNow(requests: readonly RateRequest[]): RateVerdict {
    const now = this.clock.now().getTime();
    const active = requests.map((r, i) => ({ ...r, i })).filter((r) => isActive(r.limit));
    const current = active.map((r) => refill(r.limit, this.#buckets.get(r.key), now));
    const empty = current.findIndex((b) => b.tokens < 1);
    if (empty >= 0) {
      const r = active[empty]!;
      return { allowed: false, refused: r.i, retryAfterSeconds: secondsUntilToken(r.limit, current[empty]!.tokens) };
    }
    active.forEach((r, j) => {
      this.#buckets.set(r.key, { tokens: current[j]!.tokens - 1, at: current[j]!.at });
      this.#limits.set(r.key, r.limit);
    });
    if (this.#buckets.size > this.maxBuckets) this.#sweep(now);
    return { allowed: true, retryAfterSeconds: 0 };
  }

  /** How many buckets are kept (for tests of the sweep). */
  get size(): number {
    return this.#buckets.size;
  }

  /**
   * Forgets full buckets; when that is not enough (a flood from very many addresses), also the
   * oldest ones, down to 90 % of the bound, so that sweeps stay rare (amortised O(1) per take).
   */
  #sweep(now: number): void {
    const forget = (key: string) => {
      this.#buckets.delete(key);
      this.#limits.delete(key);
    };
    for (const [key, bucket] of this.#buckets) {
      const limit = this.#limits.get(key);
      if (!limit || refill(limit, bucket, now).tokens >= limit.burst) forget(key);
    }
    const keep = Math.floor(this.maxBuckets * 0.9);
    for (const key of this.#buckets.keys()) {
      if (this.#buckets.size <= keep) break;
      forget(key);
    }
  }
}

/**
 * The bucket key of a source address: an IPv4 address as it is (also when IPv4-mapped), an IPv6
 * address by its /64 (one subscriber's network: counting its addresses one by one would give
 * whoever holds a /64 2^64 buckets).
 */
export function addressKey(address: string): string {
  if (address.toLowerCase().startsWith('::ffff:') && isIPv4(address.slice(7))) return address.slice(7);
  if (!isIPv6(address)) return address;
  const groups = (part: string) => (part === '' ? [] : part.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g])));
  const [head = '', tail] = address.split('%')[0]!.split('::');
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${all
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}
