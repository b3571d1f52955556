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

  it('answers the stall scan from the due index, and builds the index at start for devices written before it existed', async () => {
    const p = prefix();
    const store = await started(p);
    const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
    const devices = [
      makeDevice({ id: 'due-1', state: 'configuring', deadlineAt: at(10) }),
      makeDevice({ id: 'due-2', state: 'claimed', deadlineAt: at(20) }),
      makeDevice({ id: 'later', state: 'configuring', deadlineAt: at(90) }),
      makeDevice({ id: 'done', state: 'provisioned', deadlineAt: at(5) }),
      makeDevice({ id: 'none', state: 'configuring' }),
    ];
    await store.insertDevices(devices, []);
    const due = async (s: RedisStore) => (await s.listDevices({ states: ['claimed', 'configuring'], deadlineBefore: at(30), limit: 10 })).map((d) => d.id);
    expect(await due(store)).toStrictEqual(['due-1', 'due-2']);
    // the index follows every write: provisioned leaves it, a new deadline moves it
    const d1 = (await store.getDevice('due-1'))!;
    await store.updateDevice({ ...d1, state: 'provisioned' }, d1.revision, []);
    const later = (await store.getDevice('later'))!;
    await store.updateDevice({ ...later, deadlineAt: at(15) }, later.revision, []);
    expect(await due(store)).toStrictEqual(['due-2', 'later']);
    expect(await admin.zcard(`${p}due:configuring`)).toBe(1); // 'later' only, under its new deadline

    // a store from before the index: no dl fields, no due sets, no marker
    for (const key of await admin.keys(`${p}due:*`)) await admin.del(key);
    await admin.del(`${p}idx:due`);
    for (const d of devices) await admin.hdel(`${p}dev:${d.id}`, 'dl');
    expect(await due(store)).toStrictEqual([]);
    const reopened = await started(p);
    expect(await due(reopened)).toStrictEqual(['due-2', 'later']);
    expect(await admin.get(`${p}idx:due`)).toBe('1');
  });

  it('sweeps expired tokens from the expiry index, and builds the index at start for tokens written before it existed', async () => {
    const p = prefix();
    const store = await started(p);
    const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
    const device = makeDevice();
    await store.insertDevice(device, []);
    const old = makeBootstrapToken(device.id, { expiresAt: at(10) });
    const used = makeBootstrapToken(device.id, { expiresAt: at(20) });
    const fresh = makeBootstrapToken(device.id, { expiresAt: at(90) });
    for (const t of [old, used, fresh]) await store.insertBootstrapToken(t);
    // consumption takes a token out of the index
    await store.commitIssuance(makeIssuanceCommit(device, { token: used }));
    expect(await admin.zrange(`${p}tokexp`, '0', '-1')).toStrictEqual([`${old.expiresAt}|${old.jti}`, `${fresh.expiresAt}|${fresh.jti}`]);

    // a store from before the index: no index, no marker
    await admin.del(`${p}tokexp`, `${p}idx:tokexp`);
    expect(await store.deleteExpiredBootstrapTokens(at(60), 10)).toStrictEqual([]);
    const reopened = await started(p);
    expect(await admin.get(`${p}idx:tokexp`)).toBe('1');
    expect(await reopened.deleteExpiredBootstrapTokens(at(60), 10)).toStrictEqual([old]);
    expect(await admin.zrange(`${p}tokexp`, '0', '-1')).toStrictEqual([`${fresh.expiresAt}|${fresh.jti}`]);
    expect((await reopened.getBootstrapToken(used.jti))?.consumedAt).toBeDefined();
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
