import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { StoreError } from '../../src/store/errors.js';
import { RedisStore } from '../../src/store/redis.js';
import type { DeviceRecord } from '../../src/store/types.js';
import { makeBootstrapToken, makeDevice, makeEvent, makeIssuanceCommit, ts } from '../helpers/records.js';
import { freePort, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { expectStoreError, reopenableHarness, storeConformance } from './store.contract.js';

let server: RedisServer;
let admin: Redis;

beforeAll(async () => {
  server = await startRedisServer();
  admin = new Redis(server.url);
}, 20_000);

afterAll(async () => {
  await admin?.quit();
  await server?.stop();
});

function freshPrefix(): string {
  return `test:${randomBytes(6).toString('hex')}:`;
}

/** Deletes every key under `prefix`. */
async function wipe(prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await admin.del(...keys);
  } while (cursor !== '0');
}

storeConformance('redis', async () => {
  const prefix = freshPrefix();
  return reopenableHarness(
    () => new RedisStore({ url: server.url, prefix }),
    () => wipe(prefix),
    () => {
      const other = freshPrefix();
      return { store: new RedisStore({ url: server.url, prefix: other }), wipe: () => wipe(other) };
    },
  );
});

describe('RedisStore specifics', () => {
  const stores: RedisStore[] = [];
  const prefixes: string[] = [];

  async function started(prefix: string): Promise<RedisStore> {
    const store = new RedisStore({ url: server.url, prefix });
    stores.push(store);
    await store.start();
    return store;
  }

  function prefix(): string {
    const p = freshPrefix();
    prefixes.push(p);
    return p;
  }

  afterEach(async () => {
    for (const s of stores.splice(0)) await s.stop();
    for (const p of prefixes.splice(0)) await wipe(p);
  });

  it('the constructor only assigns: nothing is connected or written until start()', async () => {
    const p = prefix();
    const store = new RedisStore({ url: server.url, prefix: p });
    await expectStoreError(store.getDevice('x'), 'STORE_UNAVAILABLE');
    expect(await admin.keys(`${p}*`)).toStrictEqual([]);
    expect(new RedisStore({ url: server.url }).prefix).toBe('provisiond:');
  });

  it('start() against a closed port rejects with STORE_UNAVAILABLE quickly', async () => {
    const port = await freePort();
    const store = new RedisStore({ url: `redis://127.0.0.1:${port}`, prefix: prefix() });
    const t0 = Date.now();
    const err = await expectStoreError(store.start(), 'STORE_UNAVAILABLE');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(err.cause).toBeDefined();
    await expectStoreError(store.getDevice('x'), 'STORE_UNAVAILABLE');
    await store.stop();
  });

  it('two instances on the same prefix see each other; 50 concurrent updates across both: one winner', async () => {
    const p = prefix();
    const a = await started(p);
    const b = await started(p);
    const device = makeDevice();
    await a.insertDevice(device, [makeEvent(device.id)]);
    expect(await b.getDevice(device.id)).toStrictEqual(device);
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, (_, i) =>
        (i % 2 === 0 ? a : b).updateDevice({ ...device, owner: `owner-${i}` }, device.revision, [makeEvent(device.id)]),
      ),
    );
    const winners = results.filter((r): r is PromiseFulfilledResult<DeviceRecord> => r.status === 'fulfilled');
    expect(winners).toHaveLength(1);
    for (const r of results) {
      if (r.status === 'rejected') {
        expect(r.reason).toBeInstanceOf(StoreError);
        expect((r.reason as StoreError).code).toBe('REVISION_CONFLICT');
      }
    }
    const stored = await a.getDevice(device.id);
    expect(stored).toStrictEqual(winners[0]!.value);
    expect(stored?.revision).toBe(device.revision + 1);
    expect(await b.listEvents(device.id)).toHaveLength(2);
  });

  it('20 concurrent commitIssuance with one token across two instances: exactly one wins', async () => {
    const p = prefix();
    const a = await started(p);
    const b = await started(p);
    const registered = makeDevice();
    await a.insertDevice(registered, []);
    const claimed = await a.updateDevice(
      { ...registered, state: 'claimed', owner: 'Acme', site: 'HQ', claimedAt: ts(1000), updatedAt: ts(1000) },
      registered.revision,
      [],
    );
    const token = makeBootstrapToken(claimed.id);
    await b.insertBootstrapToken(token);
    const commits = Array.from({ length: 20 }, (_, i) => makeIssuanceCommit(claimed, { token, at: ts(10_000 + i) }));
    const results = await Promise.allSettled(commits.map((c, i) => (i % 2 === 0 ? a : b).commitIssuance(c)));
    const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
    expect(won).toHaveLength(1);
    for (const r of results) {
      if (r.status === 'rejected') {
        expect(r.reason).toBeInstanceOf(StoreError);
        expect(['REVISION_CONFLICT', 'TOKEN_USED']).toContain((r.reason as StoreError).code);
      }
    }
    const winner = commits[won[0]!]!;
    expect((await b.getBootstrapToken(token.jti))?.certificateSerial).toBe(winner.certificate.serial);
    expect((await a.listCertificates(claimed.id)).map((c) => c.serial)).toStrictEqual([winner.certificate.serial]);
  });

  it('a store whose server goes away rejects with STORE_UNAVAILABLE, not a hang', async () => {
    const own = await startRedisServer();
    const store = new RedisStore({ url: own.url, prefix: prefix() });
    stores.push(store);
    await store.start();
    await store.setMeta('k', 'v');
    await own.stop();
    const t0 = Date.now();
    await expectStoreError(store.getMeta('k'), 'STORE_UNAVAILABLE');
    expect(Date.now() - t0).toBeLessThan(10_000);
  }, 20_000);
});

describe('redis store: secrets', () => {
  it('never puts the password of the Redis URL into its errors', async () => {
    const { RedisStore } = await import('../../src/store/redis.js');
    const { freePort } = await import('../helpers/redis-server.js');
    const store = new RedisStore({ url: `redis://:hunter2-secret@127.0.0.1:${await freePort()}/0` });
    const err = (await store.start().catch((e: unknown) => e)) as Error;
    expect(err.message).not.toContain('hunter2-secret');
    expect(JSON.stringify({ ...err, cause: String((err as { cause?: unknown }).cause) })).not.toContain('hunter2-secret');
  });
});
