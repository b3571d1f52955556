/**
 * The whole service on the Redis store: a device goes from registered to provisioned over the
 * real path; the service refuses to start while Redis is unreachable, or when its CA and secrets
 * differ from those the store was written with; and it rides out a Redis outage.
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

describe('instances must share the CA and the service secrets', () => {
  it('refuses to start an instance whose CA and secrets differ from the store\'s, naming what differs; the same material starts', async () => {
    // `ts` (its own data directory) wrote the store first; a second instance with a fresh data
    // directory has another CA and other secrets
    const err = await startTestService({ store: ts.running.config.store }).then(
      (t) => t.stop().then(() => undefined),
      (e: unknown) => e as Error & { code?: string },
    );
    expect(err?.code).toBe('SHARED_MATERIAL_MISMATCH');
    expect(err?.message).toContain('ca, claim-code-pepper, bootstrap-token-key, network-secret-key differ'.split(', ').sort().join(', '));
    expect(err?.message).not.toMatch(/[A-Za-z0-9_-]{43}/); // no secret, not even its base64
    // a copy of the first instance's ca/ and secrets/ is accepted
    const { cp, mkdtemp, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const copy = await mkdtemp(join(tmpdir(), 'provisiond-copy-'));
    try {
      await cp(join(ts.dataDir, 'ca'), join(copy, 'ca'), { recursive: true });
      await cp(join(ts.dataDir, 'secrets'), join(copy, 'secrets'), { recursive: true });
      const second = await startTestService({ store: ts.running.config.store }, { dataDir: copy });
      await second.stop();
    } finally {
      await rm(copy, { recursive: true, force: true });
    }
  });
});

describe('a Redis outage', () => {
  it('answers 503 with Retry-After while Redis is down, and recovers by itself when it is back', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'redis-aof-'));
    let server = await startRedisServer({ dataDir: dir });
    const t = await startTestService({ store: { kind: 'redis', redisUrl: server.url } });
    try {
      const { id } = await registerAndClaim(t);
      const read = () => t.running.api.inject({ url: `/v1/devices/${id}`, headers: { authorization: `Bearer ${t.keys.viewer}` } });
      expect((await read()).statusCode).toBe(200);
      await server.stop();
      const down = await read();
      expect(down.statusCode).toBe(503);
      expect(down.headers['retry-after']).toBe('5');
      expect(down.json()).toMatchObject({ code: 'STORE_UNAVAILABLE', retryAfterSeconds: 5 });
      server = await startRedisServer({ port: server.port, dataDir: dir });
      let back = await read();
      for (let i = 0; i < 100 && back.statusCode !== 200; i++) {
        await new Promise((r) => setTimeout(r, 50));
        back = await read();
      }
      expect(back.statusCode).toBe(200);
      expect(back.json()).toMatchObject({ id, state: 'claimed' }); // nothing was lost
    } finally {
      // API keys live in Redis too: stop the service before the server
      await t.stop();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
