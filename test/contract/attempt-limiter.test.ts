/**
 * The claim throttle's two implementations, one behaviour: in process (one instance) and on Redis
 * (several instances count together). Real redis-server; the clock is pinned.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryAttemptLimiter, type AttemptLimiter, type LimiterSettings } from '../../src/policy/index.js';
import { RedisAttemptLimiter } from '../../src/store/index.js';
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

type Make = (clock: ManualClock, settings: LimiterSettings) => { limiter: AttemptLimiter; twin: () => AttemptLimiter };
const kinds: { name: string; make: Make }[] = [
  { name: 'in process', make: (clock, s) => ({ limiter: new MemoryAttemptLimiter(clock, s), twin: () => new MemoryAttemptLimiter(clock, s) }) },
  {
    name: 'Redis',
    make: (clock, s) => {
      const prefix = `lim${randomBytes(4).toString('hex')}:`;
      return { limiter: new RedisAttemptLimiter(redis, prefix, clock, s), twin: () => new RedisAttemptLimiter(redis, prefix, clock, s) };
    },
  },
];

describe.each(kinds)('attempt limiter ($name)', ({ name, make }) => {
  it('locks after the limit within the window and releases after it', async () => {
    const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'));
    const { limiter: l } = make(clock, { maxFailures: 2, windowSeconds: 60 });
    await l.fail('a');
    expect((await l.check('a')).limited).toBe(false);
    await l.fail('a');
    expect(await l.check('a')).toEqual({ limited: true, retryAfterSeconds: 60 });
    expect((await l.check('b')).limited).toBe(false);
    clock.advance(45_000);
    expect(await l.check('a')).toEqual({ limited: true, retryAfterSeconds: 15 });
    clock.advance(15_000);
    expect((await l.check('a')).limited).toBe(false);
    // a failure after the window starts a new one
    await l.fail('a');
    expect((await l.check('a')).limited).toBe(false);
    await l.fail('a');
    expect((await l.check('a')).limited).toBe(true);
    await l.reset('a');
    expect((await l.check('a')).limited).toBe(false);
  });

  it(name === 'Redis' ? 'counts the failures of every instance together' : 'counts per process (each instance on its own)', async () => {
    const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'));
    const { limiter: a, twin } = make(clock, { maxFailures: 4, windowSeconds: 60 });
    const b = twin();
    await Promise.all([a.fail('k'), b.fail('k'), a.fail('k'), b.fail('k')]);
    expect((await a.check('k')).limited).toBe(name === 'Redis');
    expect((await b.check('k')).limited).toBe(name === 'Redis');
  });
});

describe('Redis attempt limiter', () => {
  it('lets Redis forget abandoned keys a minute after their window', async () => {
    const clock = new ManualClock();
    const prefix = `lim${randomBytes(4).toString('hex')}:`;
    const l = new RedisAttemptLimiter(redis, prefix, clock, { maxFailures: 3, windowSeconds: 600 });
    await l.fail('client:10.0.0.1');
    const ttl = await redis.pttl(`${prefix}attempts:client:10.0.0.1`);
    expect(ttl).toBeGreaterThan(600_000);
    expect(ttl).toBeLessThanOrEqual(660_000);
  });

  it('answers STORE_UNAVAILABLE when Redis is gone', async () => {
    const conn = await connectionToStoppedRedis();
    const l = new RedisAttemptLimiter(conn, 'x:', new ManualClock(), { maxFailures: 1, windowSeconds: 1 });
    await expect(l.check('a')).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    await expect(l.fail('a')).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    conn.disconnect();
  });
});
