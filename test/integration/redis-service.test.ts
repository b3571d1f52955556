/**
 * The whole service on the Redis store: a device goes from registered to provisioned over the
 * real path, and the service refuses to start while Redis is unreachable. (Several instances on one
 * Redis, the shared broker and outages are issue 5.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import { registerAndClaim } from '../helpers/device.js';
import { freePort, startRedisServer } from '../helpers/redis-server.js';
import { startTestService, type TestService } from '../helpers/service.js';

let redis: Awaited<ReturnType<typeof startRedisServer>>;
let ts: TestService;
beforeAll(async () => {
  redis = await startRedisServer();
  ts = await startTestService({ store: { kind: 'redis', redisUrl: redis.url, redisPrefix: `t${Date.now()}:` } });
});
afterAll(async () => {
  await ts?.stop();
  await redis?.stop();
});

describe('the service on Redis', () => {
  it('provisions a device end to end with its state in Redis', async () => {
    const { id, bootstrap } = await registerAndClaim(ts);
    const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap });
    try {
      await device.run();
    } finally {
      await device.stop();
    }
    expect((await ts.running.store.getDevice(id))?.state).toBe('provisioned');
    expect((await ts.running.store.listEvents(id)).map((e) => e.type)).toContain('provisioned');
    expect(ts.running.store.constructor.name).toBe('RedisStore');
  });

  it('refuses to start while Redis is unreachable, with a clear message', async () => {
    const port = await freePort();
    await expect(startTestService({ store: { kind: 'redis', redisUrl: `redis://127.0.0.1:${port}` } })).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
  });
});
