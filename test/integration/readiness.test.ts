/**
 * The probes: /livez answers while the process runs; /readyz only while the store answers, the
 * MQTT and HTTP listeners accept and the service is not stopping, else 503 with a code. Both are
 * public and never rate-limited.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { waitUntil } from '../helpers/wait.js';

const readyz = async (ts: TestService) => ts.running.api.inject({ url: '/readyz' });

describe('on SQLite', () => {
  let ts: TestService | undefined;
  afterAll(async () => {
    await ts?.stop();
  });

  it('is live and ready once started, without a key', async () => {
    ts = await startTestService();
    const live = await ts.running.api.inject({ url: '/livez' });
    expect(live.statusCode).toBe(200);
    expect(live.json()).toEqual({ status: 'ok' });
    const ready = await readyz(ts);
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toEqual({ status: 'ready' });
    expect((await ts.running.api.inject({ url: '/healthz' })).json()).toMatchObject({ status: 'ok', mqttClients: 0 });
  });

  it('is not ready once the MQTT listener stops accepting (the start of a shutdown)', async () => {
    await ts!.running.broker.drain(0);
    const res = await readyz(ts!);
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ statusCode: 503, code: 'NOT_READY', message: expect.stringContaining('MQTT') });
    expect(res.headers['retry-after']).toBe('5');
    expect((await ts!.running.api.inject({ url: '/livez' })).statusCode).toBe(200);
  });
});

describe('while stopping', () => {
  it('answers /readyz 503 with a code from the moment the stop begins', async () => {
    const ts = await startTestService();
    expect((await readyz(ts)).statusCode).toBe(200);
    const stopped = ts.stop();
    const res = await readyz(ts);
    // the API refuses every request from then on (SERVICE_STOPPING), the probe included
    expect(res.statusCode).toBe(503);
    expect(['NOT_READY', 'SERVICE_STOPPING']).toContain(res.json().code);
    await stopped;
  });
});

describe('on Redis', () => {
  let redis: RedisServer | undefined;
  let ts: TestService | undefined;
  afterAll(async () => {
    await ts?.stop();
    await redis?.stop();
  });

  it('is not ready while Redis is down (503 NOT_READY), and ready again once it is back', async () => {
    redis = await startRedisServer();
    ts = await startTestService({ store: { kind: 'redis', redisUrl: redis.url, redisPrefix: `ready${Date.now()}:` } });
    expect((await readyz(ts)).statusCode).toBe(200);

    await redis.stop();
    await waitUntil(async () => (await readyz(ts!)).statusCode === 503, 'readyz answers 503');
    const down = await readyz(ts);
    expect(down.json()).toMatchObject({ statusCode: 503, code: 'NOT_READY', message: expect.stringContaining('STORE_UNAVAILABLE') });
    expect(down.body).not.toContain('127.0.0.1'); // the public probe does not name the backend
    expect((await ts.running.api.inject({ url: '/livez' })).statusCode).toBe(200);

    redis = await startRedisServer({ port: redis.port });
    await waitUntil(async () => (await readyz(ts!)).statusCode === 200, 'readyz answers 200 again', 15_000);
  }, 40_000);
});
