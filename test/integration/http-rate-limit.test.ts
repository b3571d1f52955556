/**
 * HTTP request-rate limits (docs/operations.md "Limits"): per API key, per source address for
 * requests without a valid key, per tenant; 429 RATE_LIMITED with Retry-After, counted in GET
 * /metrics; health exempt. In process on SQLite, and shared by two instances on Redis. The clock is
 * pinned, so buckets refill only when a test moves it.
 */
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../helpers/clock.js';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { startTestService, type TenantKeys, type TestService } from '../helpers/service.js';

const LIMITS = { rateLimitPerClientPerSecond: 1, rateLimitPerClientBurst: 3, rateLimitPerTenantPerSecond: 1, rateLimitPerTenantBurst: 5 };
const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

/** The value of one series of GET /metrics. */
async function metric(ts: TestService, name: string, labels = ''): Promise<number> {
  const res = await ts.running.api.inject({ method: 'GET', url: '/metrics', headers: bearer(ts.keys.viewer), remoteAddress: '192.0.2.250' });
  expect(res.statusCode).toBe(200);
  const line = res.body.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return Number(line?.split(' ')[1] ?? NaN);
}

describe('HTTP rate limits (in process)', () => {
  const clock = new ManualClock();
  let ts: TestService;
  let acme: TenantKeys;
  beforeAll(async () => {
    ts = await startTestService({ http: LIMITS }, { clock });
    acme = await ts.tenant('acme');
  });
  afterAll(async () => ts?.stop());
  // every test starts with full buckets
  beforeEach(() => clock.advance(3_600_000));

  const list = (key: string, remoteAddress = '127.0.0.1') => ts.running.api.inject({ method: 'GET', url: '/v1/devices', headers: bearer(key), remoteAddress });

  it('limits each API key: the burst passes, then 429 RATE_LIMITED with Retry-After; the bucket refills at the rate', async () => {
    for (let i = 0; i < 3; i++) expect((await list(acme.viewer)).statusCode).toBe(200);
    const refused = await list(acme.viewer);
    expect(refused.statusCode).toBe(429);
    expect(refused.headers['retry-after']).toBe('1');
    expect(refused.json()).toMatchObject({ statusCode: 429, code: 'RATE_LIMITED', retryAfterSeconds: 1 });
    expect(refused.json().message).toMatch(/API key/);
    // another key of the tenant has its own bucket
    expect((await list(acme.installer)).statusCode).toBe(200);
    clock.advance(1000);
    expect((await list(acme.viewer)).statusCode).toBe(200);
    expect((await list(acme.viewer)).statusCode).toBe(429);
  });

  it('limits all keys of a tenant together, and only that tenant', async () => {
    const before = await metric(ts, 'provisiond_rate_limited_total', '{scope="tenant"}');
    for (const key of [acme.viewer, acme.viewer, acme.installer, acme.installer, acme.factory]) expect((await list(key)).statusCode).toBe(200);
    const refused = await list(acme.admin);
    expect(refused.statusCode).toBe(429);
    expect(refused.json()).toMatchObject({ code: 'RATE_LIMITED', message: expect.stringMatching(/tenant acme/) });
    // the service tenant is not affected
    expect((await list(ts.keys.installer)).statusCode).toBe(200);
    expect(await metric(ts, 'provisiond_rate_limited_total', '{scope="tenant"}')).toBe(before + 1);
  });

  it('limits requests without a key by source address; health is exempt', async () => {
    const get = (url: string, remoteAddress: string) => ts.running.api.inject({ method: 'GET', url, remoteAddress });
    for (let i = 0; i < 3; i++) expect((await get('/v1/ca/root.pem', '198.51.100.7')).statusCode).toBe(200);
    const refused = await get('/v1/ca/chain.pem', '198.51.100.7');
    expect(refused.statusCode).toBe(429);
    expect(refused.json()).toMatchObject({ code: 'RATE_LIMITED', message: expect.stringMatching(/address 198\.51\.100\.7/) });
    // unknown routes count too; another address has its own bucket
    expect((await get('/nope', '198.51.100.7')).statusCode).toBe(429);
    expect((await get('/v1/ca/root.pem', '198.51.100.8')).statusCode).toBe(200);
    for (let i = 0; i < 10; i++) expect((await get('/healthz', '198.51.100.7')).statusCode).toBe(200);
    // a public route called with an Authorization header counts for the address as well
    const withHeader = await ts.running.api.inject({ method: 'GET', url: '/v1/ca/root.pem', headers: bearer('whatever'), remoteAddress: '198.51.100.7' });
    expect(withHeader.statusCode).toBe(429);
  });

  it('makes wrong keys cost their address, and refuses keyed requests from an address that sent too many', async () => {
    const address = '203.0.113.9';
    const wrong = `pdk_0123456789abcdef_${'x'.repeat(43)}`;
    for (let i = 0; i < 4; i++) expect((await list(wrong, address)).json().code).toBe('AUTH_INVALID');
    // the address is out of tokens: even a valid key from it waits (no key check is made)
    const refused = await list(acme.viewer, address);
    expect(refused.statusCode).toBe(429);
    expect(refused.json().message).toMatch(/address 203\.0\.113\.9/);
    // the same key from elsewhere is fine
    expect((await list(acme.viewer, '203.0.113.10')).statusCode).toBe(200);
    clock.advance(2000);
    expect((await list(acme.viewer, address)).statusCode).toBe(200);
  });

  it('does not let a key id read from an unchecked header drain that key', async () => {
    const id = acme.viewer.split('_')[1]!;
    const forged = `pdk_${id}_${'y'.repeat(43)}`;
    for (let i = 0; i < 6; i++) await list(forged, `203.0.113.${20 + i}`);
    expect((await list(acme.viewer)).statusCode).toBe(200);
  });

  it('GET /metrics: Prometheus text for admin and viewer keys of the service tenant only', async () => {
    const res = await ts.running.api.inject({ method: 'GET', url: '/metrics', headers: bearer(ts.keys.admin), remoteAddress: '192.0.2.251' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    for (const name of ['provisiond_rate_limited_total', 'provisiond_mqtt_rejections_total', 'provisiond_bootstrap_tokens_expired_total', 'provisiond_claims_rate_limited_total']) {
      expect(res.body).toContain(`# TYPE ${name} counter`);
    }
    expect(res.body).toContain('provisiond_mqtt_rejections_total{limit="connection_rate_address"} 0');
    const as = (key?: string) => ts.running.api.inject({ method: 'GET', url: '/metrics', remoteAddress: '192.0.2.252', ...(key ? { headers: bearer(key) } : {}) });
    expect((await as(ts.keys.installer)).json().code).toBe('ROLE_FORBIDDEN');
    expect((await as(acme.viewer)).json().code).toBe('ROLE_FORBIDDEN');
    expect((await as()).json().code).toBe('AUTH_REQUIRED');
  });

  it('counts claims refused by the claim throttle', async () => {
    const before = await metric(ts, 'provisiond_claims_rate_limited_total');
    const claim = () =>
      ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: bearer(ts.keys.installer), remoteAddress: '192.0.2.77', payload: { claimCode: 'WRONG-CODE-0000', owner: 'o', site: 's' } });
    const codes: string[] = [];
    for (let i = 0; i < 6; i++) {
      codes.push((await claim()).json().code);
      clock.advance(1000); // keep the key's request bucket out of the way
    }
    expect(codes).toEqual(['CLAIM_CODE_INVALID', 'CLAIM_CODE_INVALID', 'CLAIM_CODE_INVALID', 'CLAIM_CODE_INVALID', 'CLAIM_CODE_INVALID', 'CLAIM_RATE_LIMITED']);
    expect(await metric(ts, 'provisiond_claims_rate_limited_total')).toBe(before + 1);
  });
});

describe('HTTP rate limits shared by two instances on Redis', () => {
  const clock = new ManualClock();
  let redis: RedisServer;
  let a: TestService;
  let b: TestService;
  let copy: string;
  beforeAll(async () => {
    redis = await startRedisServer();
    const settings = { http: LIMITS, store: { kind: 'redis' as const, redisUrl: redis.url, redisPrefix: `rl${Date.now()}:` } };
    a = await startTestService(settings, { clock });
    copy = await mkdtemp(join(tmpdir(), 'provisiond-rl-'));
    await cp(join(a.dataDir, 'ca'), join(copy, 'ca'), { recursive: true });
    await cp(join(a.dataDir, 'secrets'), join(copy, 'secrets'), { recursive: true });
    b = await startTestService(settings, { clock, dataDir: copy });
  });
  afterAll(async () => {
    await b?.stop();
    await a?.stop();
    await rm(copy, { recursive: true, force: true });
    await redis?.stop();
  });

  it('counts a key\'s requests on every instance together', async () => {
    clock.advance(3_600_000);
    const list = (ts: TestService) => ts.running.api.inject({ method: 'GET', url: '/v1/devices', headers: bearer(a.keys.viewer) });
    const statuses = [];
    for (const ts of [a, b, a, b]) statuses.push((await list(ts)).statusCode);
    expect(statuses).toEqual([200, 200, 200, 429]);
    clock.advance(1000);
    expect((await list(b)).statusCode).toBe(200);
    expect((await list(a)).statusCode).toBe(429);
  });
});
