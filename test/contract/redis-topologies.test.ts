/**
 * The Redis store on Sentinel and on Cluster: the whole conformance suite on each, Sentinel
 * failover, and Cluster's one-slot key layout. Real redis-server processes (a master, a replica and
 * a sentinel; three cluster masters), started here on free ports.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreError } from '../../src/store/errors.js';
import { RedisStore } from '../../src/store/redis.js';
import type { RedisSettings } from '../../src/store/redis-connection.js';
import { makeDevice, makeEvent } from '../helpers/records.js';
import { startRedisCluster, startRedisSentinel, type RedisClusterSetup, type RedisSentinelSetup } from '../helpers/redis-server.js';
import { reopenableHarness, storeConformance } from './store.contract.js';

let dir: string;
let sentinel: RedisSentinelSetup;
let cluster: RedisClusterSetup;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'provisiond-redis-topologies-'));
  [sentinel, cluster] = await Promise.all([startRedisSentinel(dir), startRedisCluster(dir)]);
}, 60_000);

afterAll(async () => {
  await sentinel?.stop();
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

const freshPrefix = () => `t${randomBytes(5).toString('hex')}:`;
const sentinelSettings = (): RedisSettings => ({
  url: 'redis://ignored-host:1/0',
  topology: 'sentinel',
  sentinels: [`127.0.0.1:${sentinel.sentinel.port}`],
  sentinelName: sentinel.name,
});
const clusterSettings = (): RedisSettings => ({
  url: cluster.nodes[0]!.url,
  topology: 'cluster',
  clusterNodes: cluster.nodes.slice(1).map((n) => `127.0.0.1:${n.port}`),
});

function harness(settings: () => RedisSettings) {
  return async () => {
    const prefix = freshPrefix();
    return reopenableHarness(
      () => new RedisStore({ ...settings(), prefix }),
      undefined,
      () => ({ store: new RedisStore({ ...settings(), prefix: freshPrefix() }), wipe: () => undefined }),
    );
  };
}

storeConformance('redis (sentinel)', harness(sentinelSettings));
storeConformance('redis (cluster)', harness(clusterSettings));

describe('Redis Cluster', () => {
  it('keeps every key of a deployment in one hash slot (the prefix becomes a hash tag)', async () => {
    const store = new RedisStore({ ...clusterSettings(), prefix: 'slot-test:' });
    expect(store.prefix).toBe('{slot-test:}');
    await store.start();
    const admin = new Cluster([{ host: '127.0.0.1', port: cluster.nodes[0]!.port }]);
    try {
      for (let i = 0; i < 20; i++) {
        const device = makeDevice({ id: `slot-${i}`, tenantId: `tenant-${i % 3}` });
        await store.insertDevice(device, [makeEvent(device.id)]);
      }
      const keys: string[] = [];
      for (const node of admin.nodes('master')) keys.push(...(await node.keys('{slot-test:}*')));
      expect(keys.length).toBeGreaterThan(20);
      const slots = new Set(await Promise.all(keys.map((k) => admin.cluster('KEYSLOT', k))));
      expect(slots.size).toBe(1);
      // and they all sit on the one node that owns the slot
      const holders = (await Promise.all(admin.nodes('master').map(async (n) => (await n.keys('{slot-test:}*')).length))).filter((n) => n > 0);
      expect(holders).toEqual([keys.length]);
      expect((await store.listDevices({ limit: 100 })).map((d) => d.id)).toHaveLength(20);
    } finally {
      await store.stop();
      admin.disconnect();
    }
  });

  it('keeps a prefix that already has a hash tag', () => {
    expect(new RedisStore({ ...clusterSettings(), prefix: 'acme:{prov}:' }).prefix).toBe('acme:{prov}:');
    expect(new RedisStore({ url: 'redis://127.0.0.1:1', prefix: 'plain:' }).prefix).toBe('plain:');
  });
});

describe('Redis Sentinel', () => {
  it('refuses to start when no sentinel answers, naming the sentinels and not the password', async () => {
    const store = new RedisStore({
      url: 'redis://:s3cret-pw@ignored:1',
      topology: 'sentinel',
      sentinels: ['127.0.0.1:1'],
      sentinelName: 'nobody',
      prefix: freshPrefix(),
    });
    const err = await store.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('STORE_UNAVAILABLE');
    expect((err as Error).message).toContain('sentinel master "nobody" via 127.0.0.1:1');
    expect((err as Error).message).not.toContain('s3cret-pw');
  });

  // Last in this file: it turns the replica into the master.
  it('follows a failover: writes fail while the master is gone, then succeed on the promoted replica; nothing replicated is lost', async () => {
    const prefix = freshPrefix();
    const store = new RedisStore({ ...sentinelSettings(), prefix });
    await store.start();
    const masterAdmin = new Redis(sentinel.master.url);
    masterAdmin.on('error', () => undefined); // it loses its server on purpose
    try {
      const before = makeDevice({ id: 'before-failover' });
      await store.insertDevice(before, [makeEvent(before.id)]);
      expect(await masterAdmin.wait(1, 2000)).toBe(1); // the replica has it

      await sentinel.master.stop();
      const during = makeDevice({ id: 'during-failover' });
      const codes = new Set<string>();
      const deadline = Date.now() + 30_000;
      for (;;) {
        try {
          await store.insertDevice(during, [makeEvent(during.id)]);
          break;
        } catch (err) {
          expect(err).toBeInstanceOf(StoreError);
          codes.add((err as StoreError).code);
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      expect([...codes]).toEqual(['STORE_UNAVAILABLE']); // never a wrong answer, only "try again"
      expect(await sentinel.currentMaster()).toBe(`127.0.0.1:${sentinel.replica.port}`);
      expect((await store.getDevice('before-failover'))?.id).toBe('before-failover');
      expect((await store.getDevice('during-failover'))?.id).toBe('during-failover');
      expect((await store.listDevices({ limit: 10 })).map((d) => d.id)).toEqual(['before-failover', 'during-failover']);
    } finally {
      masterAdmin.disconnect();
      await store.stop();
    }
  }, 60_000);
});
