/**
 * The request-rate limiter's two implementations, one behaviour: in process (one instance) and on
 * Redis (several instances share the buckets). Real redis-server; the clock is pinned.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryRateLimiter, addressKey, type RateLimiter } from '../../src/policy/index.js';
import { RedisRateLimiter } from '../../src/store/index.js';
import { ManualClock } from '../helpers/clock.js';
import { connectionToStoppedRedis, startRedisServer, type RedisServer } from '../helpers/redis-server.js';

let server: RedisServer;
let redis: Redis;
beforeAll(async () => {
  server = await startRedisServer();
  redis = new Redis(server.url);
});
afterAll(async () => {
  await redis?.quit();
  await server?.stop();
});

type Make = (clock: ManualClock) => { limiter: RateLimiter; twin: () => RateLimiter };
const kinds: { name: string; make: Make }[] = [
  { name: 'in process', make: (clock) => ({ limiter: new MemoryRateLimiter(clock), twin: () => new MemoryRateLimiter(clock) }) },
  {
    name: 'Redis',
    make: (clock) => {
      const prefix = `rl${randomBytes(4).toString('hex')}:`;
      return { limiter: new RedisRateLimiter(redis, prefix, clock), twin: () => new RedisRateLimiter(redis, prefix, clock) };
    },
  },
];

const T0 = new Date('2026-01-01T00:00:00Z');

describe.each(kinds)('rate limiter ($name)', ({ name, make }) => {
  it('allows a burst, then refuses with the time until the next token, and refills at the rate', async () => {
    const clock = new ManualClock(T0);
    const { limiter: l } = make(clock);
    const limit = { perSecond: 2, burst: 3 };
    for (let i = 0; i < 3; i++) expect(await l.take([{ key: 'a', limit }])).toEqual({ allowed: true, retryAfterSeconds: 0 });
    expect(await l.take([{ key: 'a', limit }])).toEqual({ allowed: false, refused: 0, retryAfterSeconds: 1 });
    // another key has its own bucket
    expect((await l.take([{ key: 'b', limit }])).allowed).toBe(true);
    clock.advance(500); // one token back
    expect((await l.take([{ key: 'a', limit }])).allowed).toBe(true);
    expect((await l.take([{ key: 'a', limit }])).allowed).toBe(false);
    clock.advance(60_000); // refilled up to the burst, not beyond
    for (let i = 0; i < 3; i++) expect((await l.take([{ key: 'a', limit }])).allowed).toBe(true);
    expect((await l.take([{ key: 'a', limit }])).allowed).toBe(false);
  });

  it('says how long to wait for a slow bucket', async () => {
    const clock = new ManualClock(T0);
    const { limiter: l } = make(clock);
    const limit = { perSecond: 0.1, burst: 1 };
    expect((await l.take([{ key: 'slow', limit }])).allowed).toBe(true);
    expect(await l.take([{ key: 'slow', limit }])).toEqual({ allowed: false, refused: 0, retryAfterSeconds: 10 });
    clock.advance(4_000);
    expect(await l.take([{ key: 'slow', limit }])).toEqual({ allowed: false, refused: 0, retryAfterSeconds: 6 });
  });

  it('takes from every bucket of a request or from none, and names the empty one', async () => {
    const clock = new ManualClock(T0);
    const { limiter: l } = make(clock);
    const client = { perSecond: 1, burst: 5 };
    const tenant = { perSecond: 1, burst: 2 };
    expect((await l.take([{ key: 'client:k1', limit: client }, { key: 'tenant:t', limit: tenant }])).allowed).toBe(true);
    expect((await l.take([{ key: 'client:k2', limit: client }, { key: 'tenant:t', limit: tenant }])).allowed).toBe(true);
    // the tenant is empty: refused, and the client bucket keeps its token
    expect(await l.take([{ key: 'client:k1', limit: client }, { key: 'tenant:t', limit: tenant }])).toEqual({ allowed: false, refused: 1, retryAfterSeconds: 1 });
    for (let i = 0; i < 4; i++) expect((await l.take([{ key: 'client:k1', limit: client }])).allowed).toBe(true);
    expect(await l.take([{ key: 'client:k1', limit: client }, { key: 'tenant:t', limit: tenant }])).toMatchObject({ allowed: false, refused: 0 });
  });

  it('never refuses for a limit that is off (perSecond 0)', async () => {
    const clock = new ManualClock(T0);
    const { limiter: l } = make(clock);
    for (let i = 0; i < 20; i++) expect((await l.take([{ key: 'x', limit: { perSecond: 0, burst: 1 } }])).allowed).toBe(true);
    expect(await l.take([])).toEqual({ allowed: true, retryAfterSeconds: 0 });
  });

  it('does not refill when the clock goes back', async () => {
    const clock = new ManualClock(T0);
    const { limiter: l } = make(clock);
    const limit = { perSecond: 1, burst: 1 };
    expect((await l.take([{ key: 'c', limit }])).allowed).toBe(true);
    clock.advance(-30_000);
    expect((await l.take([{ key: 'c', limit }])).allowed).toBe(false);
  });

  it(name === 'Redis' ? 'shares the buckets between instances' : 'keeps buckets per process (each instance on its own)', async () => {
    const clock = new ManualClock(T0);
    const { limiter: a, twin } = make(clock);
    const b = twin();
    const limit = { perSecond: 1, burst: 4 };
    const verdicts = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? a : b).take([{ key: 'k', limit }])));
    expect(verdicts.filter((v) => v.allowed).length).toBe(name === 'Redis' ? 4 : 8);
  });
});

describe('in-process rate limiter', () => {
  it('keeps a bounded number of buckets under a flood of keys', async () => {
    const clock = new ManualClock(T0);
    const l = new MemoryRateLimiter(clock, 1000);
    const limit = { perSecond: 1, burst: 10 };
    for (let i = 0; i < 5000; i++) l.takeNow([{ key: `ip:${i}`, limit }]);
    expect(l.size).toBeLessThanOrEqual(1000);
    // full buckets are forgotten first
    clock.advance(60_000);
    l.takeNow([{ key: 'ip:new', limit }]);
    for (let i = 0; i < 1000; i++) l.takeNow([{ key: `late:${i}`, limit }]);
    expect(l.size).toBeLessThanOrEqual(1000);
  });
});

describe('addressKey', () => {
  it('keys IPv4 addresses as they are and IPv6 addresses by their /64', () => {
    expect(addressKey('192.0.2.7')).toBe('192.0.2.7');
    expect(addressKey('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(addressKey('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:2:ffff::9')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:DB8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey('64:ff9b::192.0.2.7')).toBe('64:ff9b:0:0::/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
  });
});

describe('Redis rate limiter', () => {
  it('lets Redis forget idle buckets a minute after a full refill', async () => {
    const clock = new ManualClock(T0);
    const prefix = `rl${randomBytes(4).toString('hex')}:`;
    const l = new RedisRateLimiter(redis, prefix, clock);
    await l.take([{ key: 'client:ip:10.0.0.1', limit: { perSecond: 10, burst: 100 } }]);
    const ttl = await redis.pttl(`${prefix}rate:client:ip:10.0.0.1`);
    expect(ttl).toBeGreaterThan(60_000);
    expect(ttl).toBeLessThanOrEqual(70_000);
  });

  it('answers STORE_UNAVAILABLE when Redis is gone', async () => {
    const conn = await connectionToStoppedRedis();
    const l = new RedisRateLimiter(conn, 'x:', new ManualClock());
    await expect(l.take([{ key: 'a', limit: { perSecond: 1, burst: 1 } }])).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    conn.disconnect();
  });
});
