/**
 * Two instances on one Redis (in one test process): state, broker sessions and message fan-out are
 * shared, so what is done through instance A reaches a device connected to instance B. Run on each
 * Redis topology: one server, Sentinel (master + replica + sentinel), Cluster (three masters).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import type { ClaimResponse, ServiceConfig } from '../../schemas/types.js';
import { claim, closed, register } from '../helpers/device.js';
import { startRedisCluster, startRedisSentinel, startRedisServer } from '../helpers/redis-server.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { waitUntil } from '../helpers/wait.js';
import { ManualClock } from '../helpers/clock.js';

type StoreSettings = NonNullable<ServiceConfig['store']>;
const topologies: { name: string; start(dir: string): Promise<{ store: StoreSettings; stop(): Promise<void> }> }[] = [
  {
    name: 'one Redis server',
    start: async () => {
      const redis = await startRedisServer();
      return { store: { kind: 'redis', redisUrl: redis.url, redisPrefix: 'shared:' }, stop: redis.stop };
    },
  },
  {
    name: 'Redis Sentinel',
    start: async (dir) => {
      const setup = await startRedisSentinel(dir);
      return {
        store: {
          kind: 'redis',
          redisUrl: 'redis://sentinel-managed/0',
          redisTopology: 'sentinel',
          redisSentinels: [`127.0.0.1:${setup.sentinel.port}`],
          redisSentinelName: setup.name,
          redisPrefix: 'shared:',
        },
        stop: setup.stop,
      };
    },
  },
  {
    name: 'Redis Cluster',
    start: async (dir) => {
      const setup = await startRedisCluster(dir);
      return {
        store: {
          kind: 'redis',
          redisUrl: setup.nodes[0]!.url,
          redisTopology: 'cluster',
          redisClusterNodes: setup.nodes.slice(1).map((n) => `127.0.0.1:${n.port}`),
          redisPrefix: 'shared:',
        },
        stop: setup.stop,
      };
    },
  },
];

const auth = (key: string) => ({ authorization: `Bearer ${key}` });

describe.each(topologies)('two instances on $name', (topology) => {
  let redis: { stop(): Promise<void> };
  let dataDir: string;
  let a: TestService;
  let b: TestService;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'provisiond-shared-')); // the same CA and secrets for both
    const started = await topology.start(dataDir);
    redis = started;
    a = await startTestService({ store: started.store }, { dataDir });
    b = await startTestService({ store: started.store }, { dataDir });
  }, 60_000);
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('a profile change made through A reaches a device connected to B; a revocation through A drops it', async () => {
    const profile = (minTlsVersion: string) => ({
      name: 'shared',
      items: [
        { id: 'network', type: 'network', required: true, priority: 0, await: true, data: {} },
        { id: 'security', type: 'security-policy', required: true, priority: 10, await: false, data: { minTlsVersion, telemetryIntervalSeconds: 60, allowedTopics: [], firmwareFloor: '1.0.0' } },
      ],
    });
    expect((await a.running.api.inject({ method: 'PUT', url: '/v1/profiles/shared', headers: auth(a.keys.admin), payload: profile('1.2') })).statusCode).toBe(200);
    // registered and claimed (on the profile) through A, connected to B
    const { id, claimCode } = await register(a);
    const bootstrap = ((await claim(a, claimCode, { profileId: 'shared' })).json() as ClaimResponse).bootstrap!;
    const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap: { ...bootstrap, mqttUrl: b.mqttUrl } });
    try {
      await device.run();
      expect((await a.running.store.getDevice(id))?.state).toBe('provisioned');
      expect(b.running.broker.connectedClients).toBeGreaterThanOrEqual(1);
      // a profile change through A
      const put = await a.running.api.inject({ method: 'PUT', url: '/v1/profiles/shared', headers: auth(a.keys.admin), payload: profile('1.3') });
      expect(put.json()).toMatchObject({ rollout: { updated: 1 } });
      await waitUntil(async () => {
        const d = await b.running.store.getDevice(id);
        return d?.profileVersion === 2 && d.state === 'provisioned' && d.config?.items.find((i) => i.id === 'security')?.version === d.config?.version;
      }, 'the device on B applied the change made through A');
      // revocation through A: the device's connection on B drops
      const gone = closed(device.client!, 2000);
      expect((await a.running.api.inject({ method: 'POST', url: `/v1/devices/${id}/revoke`, headers: auth(a.keys.admin) })).statusCode).toBe(200);
      await gone;
    } finally {
      await device.stop();
    }
  });
  it("relays events: B's event streams see what happens on A; only A forwards it to webhooks", async () => {
    const seenByB: string[] = [];
    const forwardedByA: string[] = [];
    const forwardedByB: string[] = [];
    const offs = [
      b.running.bus.subscribe('default', (e) => void seenByB.push(`${e.type}:${e.deviceId}:${e.id}`)),
      a.running.bus.subscribeAll((e) => void forwardedByA.push(`${e.type}:${e.deviceId}`)),
      b.running.bus.subscribeAll((e) => void forwardedByB.push(`${e.type}:${e.deviceId}`)),
    ];
    try {
      const { id, claimCode } = await register(a);
      expect((await claim(a, claimCode)).statusCode).toBe(201);
      await waitUntil(async () => seenByB.some((s) => s.startsWith(`device.claimed:${id}:`)), "B's subscriber got A's claim event");
      expect(forwardedByA).toContain(`device.claimed:${id}`);
      expect(forwardedByB).not.toContain(`device.claimed:${id}`);
      // ids name the instance, so events from two instances never share an id
      const relayed = seenByB.find((s) => s.startsWith(`device.claimed:${id}:`))!;
      expect(relayed).toMatch(/:\d+-\d+-[0-9a-f]{8}$/);
      expect(b.running.bus.since('default').events.map((e) => e.id)).toContain(relayed.split(':').at(-1));
      // an event on B does not come back to B twice
      const before = seenByB.length;
      const { id: other, claimCode: otherCode } = await register(b);
      expect((await claim(b, otherCode)).statusCode).toBe(201);
      await waitUntil(async () => seenByB.some((s) => s.startsWith(`device.claimed:${other}:`)), 'B saw its own event');
      await new Promise((r) => setTimeout(r, 200));
      expect(seenByB.slice(before).filter((s) => s.startsWith(`device.claimed:${other}:`))).toHaveLength(1);
    } finally {
      for (const off of offs) off();
    }
  });

  it('counts wrong claim codes across instances: guesses spread over A and B lock the device on both', async () => {
    const { id, claimCode } = await register(a);
    const wrong = `${claimCode.slice(0, -4)}ZZZZ`;
    // the default limit is 5 per device: 3 guesses through A, 2 through B
    for (const ts of [a, a, a, b, b]) {
      expect((await claim(ts, wrong, { deviceId: id })).json()).toMatchObject({ code: 'CLAIM_CODE_INVALID' });
    }
    for (const ts of [a, b]) {
      const res = await claim(ts, claimCode, { deviceId: id });
      expect(res.statusCode).toBe(429);
      expect(res.json()).toMatchObject({ code: 'CLAIM_RATE_LIMITED' });
    }
    expect((await b.running.store.getDevice(id))?.state).toBe('registered');
  });
});

describe('two instances scanning for stalls at once', () => {
  it('marks a late device stalled once and reports it once', async () => {
    const redis = await startRedisServer();
    const dataDir = await mkdtemp(join(tmpdir(), 'provisiond-shared-'));
    const clock = new ManualClock();
    const store = { kind: 'redis' as const, redisUrl: redis.url };
    const a = await startTestService({ store }, { dataDir, clock });
    const b = await startTestService({ store }, { dataDir, clock });
    try {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const { id, claimCode } = await register(a);
        expect((await claim(b, claimCode)).statusCode).toBe(201);
        ids.push(id);
      }
      const reported: string[] = [];
      // what the webhook forwarders see (relayed copies reach only the event streams)
      for (const ts of [a, b]) ts.running.bus.subscribeAll((e) => void (e.type === 'device.stalled' && reported.push(e.deviceId!)));
      clock.advance(31 * 86_400_000); // past any deadline
      const [fromA, fromB] = await Promise.all([a.running.lifecycle.scanStalls(), b.running.lifecycle.scanStalls()]);
      expect([...fromA.stalled, ...fromB.stalled].sort()).toEqual([...ids].sort());
      expect(reported.sort()).toEqual([...ids].sort());
      for (const id of ids) {
        const events = await a.running.store.listEvents(id);
        expect(events.filter((e) => e.type === 'stalled')).toHaveLength(1);
      }
    } finally {
      await a.stop();
      await b.stop();
      await redis.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
